"""When an engine's warm-up ends (msgctl.infra.warmup.JitWatch), and how the supervisor
and `up` treat a warming engine (without a JVM: the JIT is a scripted counter)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from msgctl.home import Home
from msgctl.infra import warmup
from msgctl.supervisor import priority
from msgctl.supervisor.daemon import RUNNING, Supervisor
from msgctl.supervisor.policy import RestartPolicy
from msgctl.supervisor.program import ENGINE, Program
from tests.conftest import free_port

HZ = os.sysconf("SC_CLK_TCK")


class Jvm:
    """A clock and a compiler-thread tick counter that the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.ticks: int | None = 0

    def advance(self, seconds: float, compiler_share: float) -> None:
        """`seconds` pass with the compiler threads busy `compiler_share` of a core."""
        self.now += seconds
        assert self.ticks is not None
        self.ticks += round(seconds * compiler_share * HZ)


def watch(jvm: Jvm, pid: int | None = 1) -> warmup.JitWatch:
    w = warmup.JitWatch(pid, clock=lambda: jvm.now, ticks=lambda _pid: jvm.ticks)
    w.begin()
    return w


def test_settles_once_the_compilers_go_quiet_and_not_before_the_minimum() -> None:
    jvm = Jvm()
    w = watch(jvm)
    for _ in range(30):  # a busy JIT: never settled
        jvm.advance(1.0, 0.6)
        assert not w.settled()
    jvm.advance(1.0, 0.0)
    assert not w.settled()  # the last WINDOW seconds still hold busy ones
    for _ in range(int(warmup.JitWatch.WINDOW)):
        jvm.advance(1.0, 0.02)
    assert w.settled()


def test_quiet_from_the_start_still_runs_the_minimum() -> None:
    jvm = Jvm()
    w = watch(jvm)
    seen = []
    for _ in range(int(warmup.JitWatch.MIN_SECONDS) + 2):
        jvm.advance(1.0, 0.0)
        seen.append(w.settled())
    first = seen.index(True) + 1
    assert first >= warmup.JitWatch.MIN_SECONDS


def test_nothing_settles_before_the_load_reaches_the_engine() -> None:
    jvm = Jvm()
    w = warmup.JitWatch(1, clock=lambda: jvm.now, ticks=lambda _pid: jvm.ticks)
    for _ in range(60):  # a warm-up still setting up: the compilers idle, not settled
        jvm.advance(1.0, 0.0)
        assert not w.settled()
    w.begin()
    seen = []
    for _ in range(int(warmup.JitWatch.MIN_SECONDS) + 2):
        jvm.advance(1.0, 0.0)
        seen.append(w.settled())
    assert seen.index(True) + 1 >= warmup.JitWatch.MIN_SECONDS


def test_a_jit_just_over_the_threshold_keeps_it_going() -> None:
    jvm = Jvm()
    w = watch(jvm)
    for _ in range(60):
        jvm.advance(1.0, warmup.JitWatch.QUIET * 1.5)
        assert not w.settled()


def test_a_retired_compiler_thread_does_not_read_as_quiet() -> None:
    jvm = Jvm()
    w = watch(jvm)
    for _ in range(20):
        jvm.advance(1.0, 0.5)
        w.settled()
    assert jvm.ticks is not None
    jvm.ticks -= 5 * HZ  # its ticks are gone with it: not a negative rate
    jvm.now += 1.0
    assert not w.settled()
    for _ in range(int(warmup.JitWatch.WINDOW) - 1):
        jvm.advance(1.0, 0.5)
        assert not w.settled()


def test_without_a_readable_jvm_only_the_time_limit_ends_it() -> None:
    jvm = Jvm()
    jvm.ticks = None
    w = watch(jvm)
    for _ in range(60):
        jvm.now += 1.0
        assert not w.settled()
    assert not watch(Jvm(), pid=None).settled()


def test_compiler_ticks_reads_a_real_process() -> None:
    # Python has no HotSpot compiler threads: unknown, never a quiet JIT
    assert warmup.compiler_ticks(os.getpid()) is None
    assert warmup.compiler_ticks(2 ** 22 + 12345) is None  # no such process


def test_compiler_ticks_adds_the_compiler_threads_user_and_system_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def stat(tid: int, name: str, utime: int, stime: int) -> str:
        # pid (comm) state ppid ... field 14 utime, 15 stime (1-based, as in proc(5))
        rest = ["S", "1"] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
        return f"{tid} ({name}) " + " ".join(rest)

    tasks = {"10": stat(10, "java", 500, 50), "11": stat(11, "C2 CompilerThre", 300, 7),
             "12": stat(12, "C1 CompilerThre", 40, 2), "13": stat(13, "GC Thread#0", 9, 9)}
    monkeypatch.setattr(warmup.os, "listdir", lambda _path: list(tasks))
    monkeypatch.setattr(warmup.Path, "read_text",
                        lambda self: tasks[self.parent.name])
    assert warmup.compiler_ticks(42) == 300 + 7 + 40 + 2


def test_run_leaves_other_engines_alone() -> None:
    assert warmup.run({"kind": "redis", "url": "redis://x"}, 10.0) == {}
    assert warmup.run({"kind": "kafka", "bootstrap": "x:1"}, 0.0) == {}


def test_keyspace_names_are_cql_identifiers() -> None:
    assert warmup.keyspace("us-east") == "msgctl_warmup_us_east"
    assert warmup.keyspace("EU.West 1") == "msgctl_warmup_eu_west_1"


def test_store_batches_take_every_shape_of_the_store_writers() -> None:
    """One to four conversations, one to three messages of each, every count within 12
    rounds; each conversation's seqs run on from its head and wrap."""
    from runtime.ports import Conversation

    convs = [Conversation(f"warmup-{i}", (f"a{i}", f"b{i}"), "lab") for i in range(16)]
    heads = dict.fromkeys((c.conv for c in convs), 0)
    shapes: set[int] = set()
    sizes: set[int] = set()
    for n in range(12):
        before = dict(heads)
        msgs = warmup.store_batch(n, convs, heads, "x")
        assert len(msgs) <= 9
        per_conv: dict[str, list[int]] = {}
        for m in msgs:
            per_conv.setdefault(m.conv, []).append(m.seq)
            assert m.prev == m.seq - 1 and m.sender == convs[int(m.conv[7:])].members[0]
        assert msgs[0].conv == convs[n].conv
        # each conversation runs on from where the last round left it
        assert all(seqs == list(range(before[c] + 1, before[c] + 1 + len(seqs)))
                   and heads[c] == seqs[-1] for c, seqs in per_conv.items())
        shapes.add(len(per_conv))
        sizes.update(len(seqs) for seqs in per_conv.values())
    assert shapes == {1, 2, 3, 4} and sizes == {1, 2, 3}
    heads = dict.fromkeys(heads, warmup.WRAP - 1)
    wrapped = warmup.store_batch(4, convs, heads, "x")  # two messages of one conversation
    assert [m.seq for m in wrapped] == [warmup.WRAP, 1]


def test_a_round_puts_its_heads_beside_its_messages_as_the_store_writer_does() -> None:
    """Each round asks the store for every head beside its messages (a static cell in
    the same mutation, as the router does) and writes apart, to conv_heads, only the
    ones the store could not put there: a conversation's first messages here."""
    calls: list[tuple[str, set[str], set[str]]] = []

    class Store:
        async def store_messages(self, msgs: list[Any], heads: Any = ()) -> set[str]:
            convs = {m.conv for m in msgs}
            calls.append(("messages", convs, set(heads)))
            # as CassandraStore: not beside a conversation's first messages
            return (convs & set(heads)) - {m.conv for m in msgs if m.prev == 0}

        async def set_heads(self, msgs: list[Any]) -> None:
            calls.append(("heads", {m.conv for m in msgs}, set()))

        def __getattr__(self, name: str) -> Any:  # the round's other requests
            async def request(*args: Any) -> None:
                return None
            return request

    checks = iter(range(40))
    counts = asyncio.run(warmup._drive_store(Store(), lambda: next(checks) < 39, "lab"))
    assert counts["rounds"] >= 30 and counts["errors"] == 0
    stores = [c for c in calls if c[0] == "messages"]
    assert stores and all(heads == convs for _, convs, heads in stores)
    apart = set().union(*(convs for kind, convs, _ in calls if kind == "heads"))
    # the 16 conversations' first messages had their heads written apart, and then
    # every later round of theirs beside its messages: no more heads writes than that
    assert apart and len([c for c in calls if c[0] == "heads"]) <= warmup.CONVERSATIONS


def test_snapshots_are_one_state_record_per_key() -> None:
    """As the sequencer's `msg.seq-state`: one keyed snapshot per key of the batch,
    the newest offset winning, over a bounded set of keys."""
    import json

    out = warmup.snapshots([(b"1", 10), (str(1 + warmup.STATE_KEYS).encode(), 11),
                            (b"2", 12), (None, 13)])
    assert {tuple(json.loads(k)) for k in out} == {("h", "warmup-1"), ("h", "warmup-2"),
                                                   ("h", "warmup-0")}
    assert json.loads(out[json.dumps(["h", "warmup-1"]).encode()])["head"] == 11


SERVER = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ready": True}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def engine(name: str, warmup_s: float) -> Program:
    """An engine program that answers its probe over HTTP (no JVM: the warm-up is faked)."""
    port = free_port()
    return Program(name=name, region="r", runtimes=[name.split(".")[0]],
                   argv=[sys.executable, "-c", SERVER, str(port)],
                   health_url=f"http://127.0.0.1:{port}/", endpoint="-", kind=ENGINE,
                   warmup_s=warmup_s)


async def until(condition: Any, seconds: float) -> None:
    """Poll `condition` until it holds; fail after `seconds`."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < seconds
        await asyncio.sleep(0.05)


async def test_supervisor_runs_an_engines_warm_up_after_ready_and_reports_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[tuple[float, int | None]] = []

    def fake_run(spec: dict, seconds: float, stop: threading.Event | None = None,
                 pid: int | None = None) -> dict:
        calls.append((seconds, pid))
        release.wait(10)
        return {"transactions": 3, "jit_settled": True}

    monkeypatch.setattr(warmup, "run", fake_run)
    kafka = engine("kafka.r", 42.0)
    kafka.nice = 4  # a positive value, which any user may set
    sup = Supervisor(Home(tmp_path).ensure(), [kafka])
    await sup.start_program("kafka.r")  # returns at RUNNING: dependents need not wait
    m = sup.managed["kafka.r"]
    try:
        view = sup.snapshot()["programs"][0]
        assert view["state"] == RUNNING and view["warmup"] == {"state": "warming"}
        assert view["message"] == "warming up"
        # warmed at the default priority (a favoured engine would starve the compilers
        # of the others warming beside it), given its own once warm
        assert priority.read(m.proc.pid)[1] == 0
        release.set()
        await until(lambda: m.warmup["state"] != "warming", 10)
        view = sup.snapshot()["programs"][0]
        assert view["warmup"]["state"] == "done" and view["warmup"]["transactions"] == 3
        assert view["message"] == "" and calls == [(42.0, m.proc.pid)]
        assert priority.read(m.proc.pid)[1] == 4
    finally:
        release.set()
        await sup.stop_program("kafka.r")


async def test_a_failed_warm_up_leaves_the_engine_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: object, **_k: object) -> dict:
        raise RuntimeError("broker said no")

    monkeypatch.setattr(warmup, "run", broken)
    sup = Supervisor(Home(tmp_path).ensure(), [engine("cassandra.r", 5.0)])
    await sup.start_program("cassandra.r")
    try:
        await until(lambda: sup.managed["cassandra.r"].warmup.get("state") != "warming", 5)
        view = sup.snapshot()["programs"][0]
        assert view["state"] == RUNNING
        assert view["warmup"]["state"] == "failed" and "broker said no" in view["warmup"]["error"]
    finally:
        await sup.stop_program("cassandra.r")


async def test_an_engine_exiting_mid_warm_up_ends_it_and_its_restart_is_not_warmed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = threading.Event()
    calls: list[int | None] = []

    def slow(spec: dict, seconds: float, stop: threading.Event | None = None,
             pid: int | None = None) -> dict:
        calls.append(pid)
        assert stop is not None
        if stop.wait(10):
            stopped.set()
        return {}

    monkeypatch.setattr(warmup, "run", slow)
    kafka = engine("kafka.r", 60.0)
    kafka.nice = 3
    sup = Supervisor(Home(tmp_path).ensure(), [kafka],
                     RestartPolicy(base_delay=0.05, max_delay=0.1))
    await sup.start_program("kafka.r")
    m = sup.managed["kafka.r"]
    try:
        first = m.proc.pid
        os.kill(first, 9)  # a crash while warming: `up` must not wait on it forever
        await until(lambda: m.state == RUNNING and m.proc.pid != first, 15)
        assert await asyncio.to_thread(stopped.wait, 5)  # the warm-up thread was told
        assert m.warmup["state"] == "interrupted" and m.message == ""
        await asyncio.sleep(0.3)
        assert calls == [first]  # the restarted engine is not warmed again
        assert priority.read(m.proc.pid)[1] == 3  # and runs at its priority at once
    finally:
        await sup.stop_program("kafka.r")


def test_run_drives_until_the_watch_settles_and_passes_the_abort_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class Settles(warmup.JitWatch):
        def settled(self) -> bool:  # as soon as the load reached the engine
            return self.start is not None

    def fake_kafka(bootstrap: str, seconds: float, security: object,
                   stop: threading.Event, abort: threading.Event | None = None,
                   loaded: threading.Event | None = None) -> dict:
        seen.update(bootstrap=bootstrap, seconds=seconds, abort=abort)
        assert loaded is not None and not stop.wait(2.5)  # no load yet: not settled
        loaded.set()
        assert stop.wait(5)  # then the watch ends it
        return {"transactions": 7}

    monkeypatch.setattr(warmup, "JitWatch", Settles)
    monkeypatch.setattr(warmup, "kafka", fake_kafka)
    outer = threading.Event()
    out = warmup.run({"kind": "kafka", "bootstrap": "k:1"}, 60.0, outer, pid=7)
    assert out == {"transactions": 7, "jit_settled": True}
    assert seen == {"bootstrap": "k:1", "seconds": 60.0, "abort": outer}


def test_run_stopped_from_outside_is_not_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    outer = threading.Event()

    def fake_cassandra(host: str, port: int, dc: str, seconds: float, security: object,
                       stop: threading.Event, loaded: threading.Event | None = None) -> dict:
        outer.set()  # the engine is going away
        assert stop.wait(5)
        return {"rounds": 1}

    monkeypatch.setattr(warmup, "cassandra", fake_cassandra)
    out = warmup.run({"kind": "cql", "host": "h", "port": 1, "datacenter": "x"}, 60.0, outer,
                     pid=None)
    assert out == {"rounds": 1, "jit_settled": False}


def test_run_warms_a_mirror_from_every_source_its_spec_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_mirror(bootstrap: str, sources: dict[str, str], seconds: float,
                    security: object, stop: threading.Event,
                    loaded: threading.Event | None = None) -> dict:
        seen.update(bootstrap=bootstrap, sources=sources, security=security)
        stop.set()
        return {"mirrored": 3}

    monkeypatch.setattr(warmup, "mirror", fake_mirror)
    spec = {"kind": "mirror", "bootstrap": "eu:1", "topics": ["us.heartbeats"],
            "sources": {"us": "us:1"}, "security": {"ca": "x"}}
    assert warmup.run(spec, 60.0, pid=None)["mirrored"] == 3
    assert seen == {"bootstrap": "eu:1", "sources": {"us": "us:1"}, "security": {"ca": "x"}}


def test_a_mirror_spec_without_sources_is_not_driven() -> None:
    """A plan written before mirrors were warmed names no sources: nothing to drive (the
    bootstrap is unreachable; touching it would wait out the timeout)."""
    t0 = time.monotonic()
    assert warmup.mirror("127.0.0.1:1", {}, 60.0)["transactions"] == 0
    assert time.monotonic() - t0 < 1.0


def test_up_waits_for_warm_ups_but_not_past_its_timeout(tmp_path: Path) -> None:
    import json
    import subprocess

    from msgctl.deploy.lifecycle import wait_up
    from msgctl.errors import MsgctlError

    home = Home(tmp_path).ensure()
    engine = {"name": "kafka.r", "state": RUNNING, "warmup": {"state": "warming"}}
    runtime = {"name": "gateway-1.r", "state": RUNNING}
    proc = subprocess.Popen(["sleep", "30"])
    try:
        home.state_file.write_text(json.dumps({"programs": [engine, runtime]}))
        t0 = time.monotonic()
        state = wait_up(home, proc, 1.0)  # only a warm-up left: ready, not an error
        assert time.monotonic() - t0 >= 1.0 and state["programs"][0]["warmup"]
        engine["warmup"] = {"state": "done"}
        home.state_file.write_text(json.dumps({"programs": [engine, runtime]}))
        t0 = time.monotonic()
        wait_up(home, proc, 10.0)
        assert time.monotonic() - t0 < 1.0  # returns as soon as the warm-up is done
        runtime["state"] = "STARTING"
        home.state_file.write_text(json.dumps({"programs": [engine, runtime]}))
        with pytest.raises(MsgctlError, match="not ready after 1s"):
            wait_up(home, proc, 1.0)
    finally:
        proc.kill()
        proc.wait()


def test_skip_numpy_keeps_the_cassandra_driver_off_numpy() -> None:
    import subprocess

    code = ("from runtime import lean; lean.skip_numpy(); import sys, cassandra.cluster; "
            "from cassandra.cython_deps import HAVE_NUMPY; "
            "print(HAVE_NUMPY, sys.modules.get('numpy') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
