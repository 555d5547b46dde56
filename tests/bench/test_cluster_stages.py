"""benchmarks/cluster_stages.py: reading the runtimes' histograms (no deployment needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tests.bench import scripts

stages = scripts.load("cluster_stages")
SCRIPT = scripts.BENCHMARKS / "cluster_stages.py"


def metrics_text(values: list[float]) -> str:
    r = CollectorRegistry()
    h = Histogram("msgctl_txn_seconds", "txn", buckets=(0.005, 0.01, 0.025, 0.05), registry=r)
    for v in values:
        h.observe(v)
    return generate_latest(r).decode()


def test_the_step_is_what_the_histogram_gained() -> None:
    before = stages.histograms(metrics_text([0.001] * 50))
    after = stages.histograms(metrics_text([0.001] * 50 + [0.02] * 98 + [0.04] * 2))
    s = stages.summary(stages.delta(before, after)["msgctl_txn_seconds"])
    # only the 100 observations of the step count: p50 and p99 fall in their buckets
    assert s["count"] == 100
    assert s["p50_le_ms"] == 25.0 and s["p99_le_ms"] == 50.0
    assert abs(s["mean_ms"] - 20.4) < 0.01


def test_the_count_per_second_is_over_the_time_between_the_scrapes() -> None:
    before = stages.histograms(metrics_text([0.001] * 7))
    after = stages.histograms(metrics_text([0.001] * 7 + [0.004] * 250))
    s = stages.summary(stages.delta(before, after)["msgctl_txn_seconds"], 20.0)
    assert s["count"] == 250 and s["per_s"] == 12.5
    assert "per_s" not in stages.summary(stages.delta(before, after)["msgctl_txn_seconds"])


def test_a_histogram_that_did_not_move_has_no_count() -> None:
    text = stages.histograms(metrics_text([0.003]))
    assert stages.summary(stages.delta(text, text)["msgctl_txn_seconds"]) == {"count": 0}
    assert stages.histograms("no metrics here\n") == {}


def test_store_writes_are_what_the_store_writers_counters_gained() -> None:
    from runtime.metrics import Metrics

    m = Metrics()  # the runtime's own counters, rendered as its /metrics serves them
    m.store_writes.labels("messages").inc(40)
    m.store_requests.inc(9)
    before = stages.counters(m.render().decode())
    m.store_writes.labels("messages").inc(300)
    m.store_writes.labels("cids").inc(250)
    m.store_writes.labels("heads_apart").inc(50)
    m.store_requests.inc(60)
    gained = stages.delta(before, stages.counters(m.render().decode()))
    # every runtime serves the counters: a gateway's stay at 0 and change nothing
    idle = Metrics()
    idle_text = idle.render().decode()
    assert "msgctl_store_requests_total 0.0" in idle_text
    at_rest = stages.delta(stages.counters(idle_text), stages.counters(idle_text))
    writes = stages.store_writes([at_rest, gained, at_rest], 10.0)
    assert list(writes) == ["requests", "messages", "cids", "heads_apart"]
    assert writes["requests"] == {"count": 60, "per_s": 6.0}
    assert writes["messages"] == {"count": 300, "per_s": 30.0}
    assert writes["cids"]["count"] == 250 and writes["heads_apart"]["count"] == 50
    # two processes writing batches add up
    assert stages.store_writes([gained, gained], 10.0)["requests"]["count"] == 120
    assert stages.store_writes([at_rest], 10.0) == {}
    assert stages.store_writes([stages.counters(metrics_text([0.01]))], 10.0) == {}


def test_cpu_is_what_each_program_used_during_the_step(tmp_path: Path) -> None:
    import json
    import os
    import time

    from msgctl.home import Home

    home = Home(tmp_path)
    home.state_file.parent.mkdir(parents=True, exist_ok=True)
    # this test's own process stands in for a program; a gone pid is left out
    home.state_file.write_text(json.dumps({"programs": [
        {"name": "busy.local", "pid": os.getpid()}, {"name": "gone.local", "pid": 2 ** 22 + 7},
        {"name": "stopped.local", "pid": None}]}))
    before, t0 = stages.cpu_ticks(home), time.monotonic()
    while time.monotonic() - t0 < 0.5:  # spin half a second
        pass
    cpu = stages.cpu_percent(before, stages.cpu_ticks(home), time.monotonic() - t0)
    assert list(cpu) == ["busy.local"]
    assert 20 <= cpu["busy.local"] <= 110  # a spinning process, on a possibly busy machine
    # a program whose counter went back (it restarted) is left out
    assert stages.cpu_percent({"x": 500}, {"x": 10}, 1.0) == {}


@pytest.mark.parametrize("flag", ["--pairs", "--ack-every"])
def test_a_count_below_one_is_refused_before_anything_runs(flag: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--home", str(tmp_path), flag, "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{flag} must be at least 1" in done.stderr


def test_a_negative_warmup_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--home", str(tmp_path), "--warmup",
                           "-1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--warmup must be 0 or more" in done.stderr


_EVAC = "(G1 Evacuation Pause)"
GC_LOG = "\n".join([
    f"[2026-12-06T08:37:13.370+0000][1060.167s] GC(80) Pause Young (Normal) {_EVAC} "
    "300M->120M(512M) 29.477ms",
    f"[2026-12-06T08:37:15.844+0000][1062.640s] GC(81) Pause Young (Concurrent Start) {_EVAC} "
    "250M->130M(512M) 17.967ms",
    "[2026-12-06T08:37:15.900+0000][1062.700s] GC(82) Concurrent Mark Cycle 211.5ms",
    "[2026-12-06T08:37:16.075+0000][1062.871s] GC(82) Pause Remark 247M->231M(512M) 9.097ms",
    f"[2026-12-06T08:37:30.000+0000][1077.000s] GC(83) Pause Young (Normal) {_EVAC} "
    "260M->120M(512M) 40.000ms",
])
# the parallel collector's (Kafka's) lines
PARALLEL_LOG = "\n".join([
    "[2026-12-06T23:02:33.900+0000][315.356s] GC(58) Pause Full (Metadata GC Threshold) "
    "91M->59M(219M) 733.337ms",
    "[2026-12-06T23:02:39.960+0000][321.416s] GC(59) Pause Young (Allocation Failure) "
    "105M->60M(219M) 2.719ms",
])


def _epoch(stamp: str) -> float:
    from datetime import datetime
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def test_gc_pauses_are_those_that_ended_in_the_step() -> None:
    start, end = _epoch("2026-12-06T08:37:14.000+0000"), _epoch("2026-12-06T08:37:20.000+0000")
    got = stages.gc_pauses(GC_LOG.splitlines(), start, end)
    # a young pause and the remark ended in the window; a concurrent cycle is no pause
    assert got == {"gc_pauses": 2, "gc_pause_ms": 27.1, "gc_pause_max_ms": 18.0,
                   "gc_full_pauses": 0}
    everything = stages.gc_pauses(GC_LOG.splitlines() + ["garbage", ""], 0, 2e9)
    assert everything["gc_pauses"] == 4 and everything["gc_pause_max_ms"] == 40.0


def test_a_full_collection_is_counted_and_named_on_the_engines_line() -> None:
    got = stages.gc_pauses(PARALLEL_LOG.splitlines(), 0, 2e9)
    assert got == {"gc_pauses": 2, "gc_pause_ms": 736.1, "gc_pause_max_ms": 733.3,
                   "gc_full_pauses": 1}
    assert stages.describe("kafka.local", got) == (
        "kafka.local: 2 GC pauses (736 ms, longest 733, 1 full)")
    young = stages.gc_pauses(PARALLEL_LOG.splitlines(),
                             _epoch("2026-12-06T23:02:35.000+0000"), 2e9)
    assert young["gc_full_pauses"] == 0
    assert stages.describe("kafka.local", young) == (
        "kafka.local: 1 GC pauses (3 ms, longest 3)")


def test_cassandra_flushes_and_compactions_in_the_step(tmp_path: Path) -> None:
    import time

    from msgctl.deploy import logs

    def at(epoch: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) + ",146"

    t = 1_796_546_000.0
    log = tmp_path / "cassandra.local.log"
    log.write_text("\n".join([
        f"INFO  [PerDiskMemtableFlushWriter_0:16] {at(t)} Flushing.java:179 - Completed "
        "flushing /x/messages/nb-12-big-Data.db (8.795MiB) for commitlog position ...",
        f"INFO  [CompactionExecutor:3] {at(t + 2)} CompactionTask.java:268 - Compacted "
        "(c2073a40) 4 sstables to [/x/nb-13-big,] to level=0.  55.796MiB to 56.121MiB "
        "(~100% of original) in 1,940ms.  Read Throughput = 28.759MiB/s",
        f"INFO  [CompactionExecutor:3] {at(t + 3)} CompactionTask.java:175 - Compacting "
        "(c2073a41) [/x/nb-9-big-Data.db:level=0, ]",
        f"INFO  [CompactionExecutor:3] {at(t + 60)} CompactionTask.java:268 - Compacted "
        "(c2073a42) 4 sstables to [/x/nb-14-big,] to level=0.  1MiB to 1MiB "
        "(~100% of original) in 12ms.  Read Throughput = 1MiB/s",
    ]) + "\n")
    got = stages.cassandra_work(logs.read(log), t - 1, t + 10)
    # the one started but not finished in the window is not counted; the later one neither
    assert got == {"flushes": 1, "compactions": 1, "compaction_ms": 1940}
    line = stages.describe("cassandra.local", {**got, "gc_pauses": 3, "gc_pause_ms": 61.2,
                                               "gc_pause_max_ms": 30.0})
    assert line == ("cassandra.local: 3 GC pauses (61 ms, longest 30), 1 memtable flushes, "
                    "1 compactions (1,940 ms)")


def test_engine_work_reads_each_engines_own_logs(tmp_path: Path) -> None:
    import json
    import time

    from msgctl.home import Home

    home = Home(tmp_path)
    home.state_file.parent.mkdir(parents=True, exist_ok=True)
    home.state_file.write_text(json.dumps({"programs": [
        {"name": "cassandra.local", "pid": 1}, {"name": "kafka.local", "pid": 2},
        {"name": "gateway-1.local", "pid": 3}]}))
    for name in ("cassandra.local", "kafka.local"):
        logs = tmp_path / "engines" / name / "logs"
        logs.mkdir(parents=True)
        (logs / "gc.log").write_text(GC_LOG + "\n")
    start, end = _epoch("2026-12-06T08:37:14.000+0000"), _epoch("2026-12-06T08:37:20.000+0000")
    # Cassandra writes the host's local time
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start + 1)) + ",000"
    home.logs.mkdir(parents=True, exist_ok=True)
    (home.logs / "cassandra.local.log").write_text(
        f"INFO  [PerDiskMemtableFlushWriter_0:1] {stamp} Flushing.java:179 - "
        "Completed flushing /x/nb-1-big-Data.db (1MiB) for commitlog position ...\n")
    got = stages.engine_work(home, start, end)
    # the engines only (a runtime has no gc.log), each from its own files
    assert set(got) == {"cassandra.local", "kafka.local"}
    assert got["kafka.local"] == {"gc_pauses": 2, "gc_pause_ms": 27.1, "gc_pause_max_ms": 18.0,
                                  "gc_full_pauses": 0}
    assert got["cassandra.local"] == {"gc_pauses": 2, "gc_pause_ms": 27.1,
                                      "gc_pause_max_ms": 18.0, "gc_full_pauses": 0,
                                      "flushes": 1,
                                      "compactions": 0, "compaction_ms": 0}


def test_jit_ticks_count_a_jvms_compiler_threads_only(tmp_path: Path) -> None:
    """A real HotSpot JVM (compiling a source file it was given) is counted; a Python
    process, which has no compiler threads, is left out."""
    import json
    import os
    import shutil
    import time

    from msgctl.home import Home

    java = shutil.which("java")
    assert java is not None, "the engines need a JDK on this machine"
    source = tmp_path / "Sleep.java"
    source.write_text("public class Sleep { public static void main(String[] a) throws "
                      "Exception { Thread.sleep(30000); } }\n")
    jvm = subprocess.Popen([java, str(source)])
    try:
        home = Home(tmp_path)
        home.state_file.parent.mkdir(parents=True, exist_ok=True)
        home.state_file.write_text(json.dumps({"programs": [
            {"name": "jvm.local", "pid": jvm.pid},
            {"name": "python.local", "pid": os.getpid()}]}))
        deadline = time.monotonic() + 20
        ticks = stages.jit_ticks(home)
        while not ticks.get("jvm.local") and time.monotonic() < deadline:
            time.sleep(0.2)  # compiling the source in memory takes the JIT some ticks
            ticks = stages.jit_ticks(home)
        assert list(ticks) == ["jvm.local"]
        assert ticks["jvm.local"] > 0
    finally:
        jvm.kill()
        jvm.wait()


def test_an_engines_line_names_its_jit_compilers_share() -> None:
    work = {"gc_pauses": 1, "gc_pause_ms": 9.0, "gc_pause_max_ms": 9.0, "jit_percent": 12.4}
    assert "JIT compilers 12% of a core" in stages.describe("kafka.local", work)
    del work["jit_percent"]  # a step in which a compiler thread ended
    assert "JIT" not in stages.describe("kafka.local", work)


def collector_text(pauses: dict[str, list[float]]) -> str:
    """A runtime's /metrics text with its collector pauses (generation -> seconds)."""
    r = CollectorRegistry()
    h = Histogram("msgctl_gc_pause_seconds", "gc", ["generation"],
                  buckets=(0.001, 0.01, 0.1), registry=r)
    for generation, seconds in pauses.items():
        for s in seconds:
            h.labels(generation).observe(s)
    return generate_latest(r).decode()


def test_a_runtimes_collector_pauses_are_what_the_step_added_over_every_generation() -> None:
    before = {stages.GC_PAUSES: stages.collector(collector_text({"0": [0.0005] * 10}))}
    after = {stages.GC_PAUSES: stages.collector(collector_text({
        "0": [0.0005] * 30, "1": [0.004] * 3, "2": [0.05]}))}
    got = stages.collector_pauses(stages.delta(before, after)[stages.GC_PAUSES])
    assert got == {"gc_pauses": 24, "gc_pause_ms": 72.0, "gc_pause_max_le_ms": 100.0,
                   "gc_full_pauses": 1}


def test_a_runtime_without_collections_reports_none() -> None:
    quiet = stages.collector(collector_text({"0": [0.0005] * 4}))
    got = stages.collector_pauses(stages.delta({stages.GC_PAUSES: quiet},
                                               {stages.GC_PAUSES: quiet})[stages.GC_PAUSES])
    assert got == {"gc_pauses": 0, "gc_pause_ms": 0.0, "gc_pause_max_le_ms": 0.0,
                   "gc_full_pauses": 0}
    assert stages.collector("msgctl_txn_seconds_count 3.0\n") == {}


def test_run_queue_waits_are_per_thread_and_skip_restarted_programs() -> None:
    # ns waited so far per thread: a thread that started in the step counts whole, one
    # that ended is left out, and a program with a new pid (restarted) is left out
    before = {"gateway-1": (10, {10: 1_000_000_000, 11: 500_000_000, 12: 7}),
              "kafka": (20, {20: 0, 21: 0}), "push": (30, {30: 0})}
    after = {"gateway-1": (10, {10: 1_900_000_000, 11: 600_000_000, 13: 200_000_000}),
             "kafka": (20, {20: 0, 21: 300_000_000}), "push": (31, {31: 900_000_000})}
    waits = stages.wait_percent(before, after, 2.0)
    assert waits == {"gateway-1": {"threads": 60.0, "main": 45.0},
                     "kafka": {"threads": 15.0, "main": 0.0}}
    assert list(waits) == ["gateway-1", "kafka"]  # the longest waits first


def test_a_live_processes_threads_report_their_waits() -> None:
    import os
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        waits = stages._thread_waits(os.getpid())
    finally:
        stop.set()
        thread.join()
    assert waits is not None and os.getpid() in waits and thread.native_id in waits
    assert all(ns >= 0 for ns in waits.values())
    assert stages._thread_waits(2**22 + 12345) is None  # no such process
