"""Where a message's time goes on the running deployment: each stage's latency from the
runtimes' own histograms, around one steady `msgctl bench` step.

    python benchmarks/cluster_stages.py [--home DIR] [--rate 200] [--seconds 10]
        [--ack-every 32] [--pairs 4] [--warmup 1] [--json]

Scrapes `/metrics` of every runtime of the first region (each gateway process and,
on the cluster family, the sequencer, presence and push processes) before and after
one open-loop 1:1 step at RATE msgs/s (over --pairs conversations: 4, or one per
100 msgs/s when that is more; the client's figures leave out its first --warmup
seconds, where the conversations' first messages go), and prints per histogram the
count (and per second), the mean and the p50/p99 bucket bound of what the step added:
send -> sent at the gateway,
the sequencer's batch (lookups + durable append) and its Kafka transaction alone,
gateway send -> router read, the store write, gateway send -> published to the
gateways (the oldest message of each published batch); and what the store writer
sent Cassandra a second (`store_writes`: its requests, and the partitions it wrote:
conversation buckets of messages, senders' cid index rows, heads in the messages' own
mutation and heads written apart to `conv_heads`). Next to them, the client's own
send -> sent and send -> deliver percentiles of the step and the CPU its own
processes used while they sent (`client.cpu_percent`), and the CPU each
supervised program (engines and runtimes) used during it, in % of one core, with
how long its threads waited for a core meanwhile (`wait_percent`, from each
thread's schedstat: all its threads together, and its first thread alone, which is
a Python runtime's event loop): on a small machine the latency is mostly time
spent waiting for a core. Last, what
the JVM engines did meanwhile that holds requests up: their collectors' pauses, full
collections counted apart (from each engine's gc.log), the CPU their JIT compilers
used (a JVM still compiling its hot paths, as in a first minute after start) and
Cassandra's memtable flushes and compactions (from its log); and each Python
runtime's collector pauses (`msgctl_gc_pause_seconds`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msgctl import topology as topo_mod  # noqa: E402
from msgctl.bench import runner  # noqa: E402
from msgctl.deploy import logs as logs_mod  # noqa: E402
from msgctl.deploy import metrics  # noqa: E402
from msgctl.home import Home, default_home  # noqa: E402
from msgctl.infra import warmup  # noqa: E402
from msgctl.supervisor.client import read_state  # noqa: E402
from msgctl.tls import trust, trust_children  # noqa: E402

STAGES = {
    "msgctl_send_seconds": "gateway: send -> sent",
    "msgctl_append_seconds": "sequencer: batch (lookups + append/transaction)",
    "msgctl_ingress_lag_seconds": "sequencer: gateway send -> its batch planned",
    "msgctl_txn_seconds": "sequencer: Kafka transaction",
    "msgctl_route_lag_seconds": "router: gateway send -> read by the router",
    "msgctl_store_seconds": "router: store write of one batch",
    "msgctl_publish_lag_seconds": "router: gateway send -> published (oldest of a batch)",
    "msgctl_gateway_lag_seconds": "gateway: send -> a routed batch read (oldest of it)",
}


# the store writer's counters: partitions written by kind, and its Cassandra requests
STORE_WRITES = "msgctl_store_writes_total"
STORE_REQUESTS = "msgctl_store_requests_total"
# each runtime's Python collector: its pauses, by generation
GC_PAUSES = "msgctl_gc_pause_seconds"
T = TypeVar("T")  # what `_per_program` reads of each program


def counters(text: str) -> dict[str, dict[str, float]]:
    """The store writer's counters in a /metrics text: {STORE_WRITES: {what: value},
    STORE_REQUESTS: {"requests": value}} (what the process has)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(STORE_WRITES + '{what="'):
            what = head.split('"', 2)[1]
            out.setdefault(STORE_WRITES, {})[what] = float(value)
    if (requests := metrics.sample(text, STORE_REQUESTS)) is not None:
        out[STORE_REQUESTS] = {"requests": requests}
    return out


def store_writes(gains: list[dict[str, dict[str, float]]], seconds: float) -> dict[str, Any]:
    """What the store writers sent Cassandra, from their counters' gains over `seconds`
    (summed over the processes; every runtime serves the counters, at 0 where it writes
    no batches): kind -> {"count", "per_s"}, requests first, kinds that did not move
    left out."""
    totals: dict[str, float] = {}
    for gained in gains:
        for name in (STORE_REQUESTS, STORE_WRITES):
            for what, n in gained.get(name, {}).items():
                totals[what] = totals.get(what, 0.0) + n
    return {what: {"count": int(n), "per_s": round(n / seconds, 1) if seconds else 0.0}
            for what, n in totals.items() if n > 0}


def histograms(text: str, names: Iterable[str] = STAGES) -> dict[str, dict[str, float]]:
    """name -> {"count", "sum", "le=<bound>": cumulative count}, for each of `names` the
    text has; a labelled histogram's label sets summed together."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, _, value = line.rpartition(" ")
        base = head.split("{", 1)[0]
        for name in names:
            if base == f"{name}_bucket":
                key = "le=" + head.split('le="', 1)[1].split('"', 1)[0]
            elif base == f"{name}_count" or base == f"{name}_sum":
                key = base.rsplit("_", 1)[1]
            else:
                continue
            d = out.setdefault(name, {})
            d[key] = d.get(key, 0.0) + float(value)
    return out


def collector(text: str) -> dict[str, float]:
    """A runtime's collector pauses in a /metrics text, all generations together:
    {"count", "sum", "le=<bound>": cumulative count, "full": the oldest generation's
    count} (empty where the process has none)."""
    out = histograms(text, (GC_PAUSES,)).get(GC_PAUSES, {})
    oldest = f'{GC_PAUSES}_count{{generation="2"}} '
    for line in text.splitlines():
        if line.startswith(oldest):
            out["full"] = float(line[len(oldest):])
    return out


def collector_pauses(d: dict[str, float]) -> dict[str, Any]:
    """What a runtime's collector paused for during the step: how many, the total ms, the
    bucket bound of the longest, and how many were of the oldest generation."""
    count = d.get("count", 0.0)
    longest = min((float(k[3:]) for k, v in d.items()
                   if k.startswith("le=") and k[3:] != "+Inf" and v >= count > 0),
                  default=0.0 if count <= 0 else float("inf"))
    return {"gc_pauses": int(count), "gc_pause_ms": round(d.get("sum", 0.0) * 1000, 1),
            "gc_pause_max_le_ms": longest * 1000, "gc_full_pauses": int(d.get("full", 0.0))}


def delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
          ) -> dict[str, dict[str, float]]:
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        out[name] = {k: v - b.get(k, 0.0) for k, v in a.items()}
    return out


def summary(d: dict[str, float], seconds: float | None = None) -> dict[str, Any]:
    """Count, mean and the p50/p99 bucket bounds of what a histogram gained; with the
    `seconds` between the two scrapes, also the count per second (for the sequencer's
    transactions: how many sends share one)."""
    count = d.get("count", 0.0)
    if count <= 0:
        return {"count": 0}
    bounds = sorted((float(k[3:]) if k[3:] != "+Inf" else float("inf"), v)
                    for k, v in d.items() if k.startswith("le="))

    def quantile(q: float) -> float:
        for bound, cum in bounds:
            if cum >= q * count:
                return bound * 1000
        return float("inf")

    out: dict[str, Any] = {"count": int(count)}
    if seconds:
        out["per_s"] = round(count / seconds, 1)
    return out | {"mean_ms": round(d["sum"] / count * 1000, 2),
                  "p50_le_ms": quantile(0.5), "p99_le_ms": quantile(0.99)}


def endpoints(home: Home) -> list[tuple[str, str, int, ssl.SSLContext | None]]:
    """Each process's metrics address, with the TLS its port serves (the gateways')."""
    dep = home.deployment() or {}
    region = dep["regions"][0]
    cluster = dep.get("backend") == "cluster"
    tls = trust(dep)
    out = [(f"gateway-{i + 1}" if cluster else "node", region["host"],
            region["gateway_port"] + i, tls)
           for i in range(int(region.get("gateway_processes", 1)))]
    if cluster:
        out += [(rt, region["host"], region["gateway_port"] + off, None)
                for rt, off in topo_mod.RUNTIME_PORT_OFFSETS.items()]
    return out


def scrape_all(points: list[tuple[str, str, int, ssl.SSLContext | None]]
               ) -> dict[str, dict[str, dict[str, float]]]:
    """Each process's stage histograms and store writer counters."""
    out = {}
    for name, host, port, tls in points:
        text = metrics.scrape(host, port, timeout=2, tls=tls) or ""
        out[name] = histograms(text) | counters(text) | {GC_PAUSES: collector(text)}
    return out


def _per_program(home: Home, read: Callable[[int], T | None]) -> dict[str, T]:
    """program -> `read` of its pid (the programs not running, or where it says None,
    left out)."""
    out: dict[str, T] = {}
    for prog in (read_state(home) or {}).get("programs", []):
        if prog.get("pid") and (value := read(prog["pid"])) is not None:
            out[prog["name"]] = value
    return out


def _process_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime


def cpu_ticks(home: Home) -> dict[str, int]:
    """program -> CPU ticks (user + system) its process and children used so far."""
    return _per_program(home, _process_ticks)


def jit_ticks(home: Home) -> dict[str, int]:
    """JVM program -> CPU ticks its JIT compiler threads used so far (the programs that
    are not a HotSpot JVM are left out)."""
    return _per_program(home, warmup.compiler_ticks)


def _thread_waits(pid: int) -> dict[int, int] | None:
    """thread id -> ns it has waited on a run queue so far (`/proc/.../schedstat`: the
    time it was ready to run while another task had the core)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: dict[int, int] = {}
    for task in tasks:
        try:
            out[int(task)] = int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text()
                                 .split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended, or a kernel without schedstats
    return out


def _pid_and_waits(pid: int) -> tuple[int, dict[int, int]] | None:
    waits = _thread_waits(pid)
    return None if waits is None else (pid, waits)


def thread_waits(home: Home) -> dict[str, tuple[int, dict[int, int]]]:
    """program -> (its pid, each of its threads' run-queue wait so far, in ns)."""
    return _per_program(home, _pid_and_waits)


def wait_percent(before: dict[str, tuple[int, dict[int, int]]],
                 after: dict[str, tuple[int, dict[int, int]]], seconds: float
                 ) -> dict[str, dict[str, float]]:
    """program -> how long its threads waited for a core over `seconds`, in % of that
    time: `threads`, all of them together (a thread that started in between counts
    whole; one that ended is left out), and `main`, its first thread alone (a Python
    runtime's event loop: near 100 with `cpu_percent`, it was ready to run all along).
    Programs that restarted in between are left out."""
    out: dict[str, dict[str, float]] = {}
    for name, (pid, waits) in after.items():
        if name not in before or before[name][0] != pid:
            continue
        earlier = before[name][1]
        gained = {tid: ns - earlier.get(tid, 0) for tid, ns in waits.items()}
        out[name] = {"threads": round(sum(gained.values()) / 1e7 / seconds, 1),
                     "main": round(gained.get(pid, 0) / 1e7 / seconds, 1)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["threads"]))


def cpu_percent(before: dict[str, int], after: dict[str, int], seconds: float
                ) -> dict[str, float]:
    """program -> % of one core over `seconds`, busiest first (programs that restarted
    in between are left out: their counters started again)."""
    hz = os.sysconf("SC_CLK_TCK")
    used = {name: (t - before[name]) / hz / seconds * 100 for name, t in after.items()
            if name in before and t >= before[name]}
    return {k: round(v, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}


# a JVM's unified GC log line ("-Xlog:gc" with time,uptime), written when a pause ends:
# [2026-12-06T08:37:13.370+0000][1060.167s] GC(85) Pause Young (Normal) (...) 29.477ms
_GC_PAUSE = re.compile(r"^\[([^\]]+)\]\[[\d.]+s\] GC\(\d+\) Pause (\w+).* ([\d.]+)ms$")
# Cassandra's "Compacted (<id>) 4 sstables to [...] ... in 1,940ms.  Read Throughput ..."
_COMPACTED_IN = re.compile(r"^Compacted \(.* in ([\d,]+)ms\b")


def gc_pauses(lines: list[str], start: float, end: float) -> dict[str, Any]:
    """The collector's pauses that ended between `start` and `end` (epoch seconds):
    how many, their total and the longest, in ms, and how many were full collections
    (the whole heap, the longest kind: "Pause Full")."""
    pauses = []
    full = 0
    for line in lines:
        m = _GC_PAUSE.match(line.strip())
        if m is None:
            continue
        try:
            at = datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        except ValueError:
            continue
        if start <= at <= end:
            pauses.append(float(m[3]))
            full += m[2] == "Full"
    return {"gc_pauses": len(pauses), "gc_pause_ms": round(sum(pauses), 1),
            "gc_pause_max_ms": round(max(pauses, default=0.0), 1), "gc_full_pauses": full}


def cassandra_work(lines: list[logs_mod.Line], start: float, end: float) -> dict[str, Any]:
    """Cassandra's memtable flushes and compactions that finished between `start` and
    `end`, and the compactions' time in ms."""
    flushes = compactions = 0
    spent = 0
    for line in lines:
        if line.time is None or not start <= line.time <= end:
            continue
        text = line.text.split(" - ", 1)[-1]  # after "File.java:123 - "
        if text.startswith("Completed flushing"):
            flushes += 1
        elif m := _COMPACTED_IN.match(text):
            compactions += 1
            spent += int(m[1].replace(",", ""))
    return {"flushes": flushes, "compactions": compactions, "compaction_ms": spent}


def engine_work(home: Home, start: float, end: float) -> dict[str, dict[str, Any]]:
    """engine program -> what it did between `start` and `end` that holds requests up."""
    out: dict[str, dict[str, Any]] = {}
    for prog in (read_state(home) or {}).get("programs", []):
        name = prog["name"]
        gc = home.root / "engines" / name / "logs" / "gc.log"
        if not gc.is_file():
            continue
        with gc.open(encoding="utf-8", errors="replace") as fh:
            got = gc_pauses(fh.readlines(), start, end)
        console = home.logs / f"{name}.log"
        if name.startswith("cassandra.") and console.is_file():
            got |= cassandra_work(logs_mod.read(console), start, end)
        out[name] = got
    return out


def describe(name: str, work: dict[str, Any]) -> str:
    """One engine's line of the table output."""
    full = f", {work['gc_full_pauses']} full" if work.get("gc_full_pauses") else ""
    parts = [f"{work['gc_pauses']} GC pauses ({work['gc_pause_ms']:.0f} ms, longest "
             f"{work['gc_pause_max_ms']:.0f}{full})"]
    if "jit_percent" in work:
        parts.append(f"JIT compilers {work['jit_percent']:.0f}% of a core")
    if "flushes" in work:
        parts.append(f"{work['flushes']} memtable flushes, {work['compactions']} "
                     f"compactions ({work['compaction_ms']:,} ms)")
    return f"{name}: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ack-every", type=int, default=None,
                        help="receivers ack every N messages (default 32; 1: each one)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="1:1 conversations the step spreads its messages over "
                             "(default 4, more when the rate needs more connections)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds at the start of the step left out of the client's "
                             "figures (0: the first messages of the step's new "
                             "conversations count too)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for flag, value in (("--ack-every", args.ack_every), ("--pairs", args.pairs)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    home = Home(args.home or default_home())
    dep = home.deployment() or {}
    if home.supervisor_pid() is None or not dep.get("regions"):
        sys.exit(f"nothing is running under {home.root}")
    region = dep["regions"][0]
    trust_children(dep)  # the client workers reach a TLS gateway
    target = runner.Target(region["ws_url"], region["http_url"], 0, home.secret())
    points = endpoints(home)
    s = runner.Settings.quick()
    s.warmup_seconds = args.warmup
    if args.ack_every is not None:
        s.ack_every = args.ack_every
    if args.pairs is not None:
        s.pairs = args.pairs
    scraped_at = time.monotonic()
    before = scrape_all(points)
    ticks, compiled, t0, wall0 = cpu_ticks(home), jit_ticks(home), time.monotonic(), time.time()
    waited = thread_waits(home)
    step = runner.run_step(target, s, args.rate, relay=False, duration=args.seconds)
    cpu = cpu_percent(ticks, cpu_ticks(home), time.monotonic() - t0)
    waits = wait_percent(waited, thread_waits(home), time.monotonic() - t0)
    # a JVM compiling its hot paths still (a first minute after start) competes for the
    # cores; left out where a compiler thread ended in between and took its ticks along
    jit = cpu_percent(compiled, jit_ticks(home), time.monotonic() - t0)
    engines = engine_work(home, wall0, time.time())
    for name, pct in jit.items():
        if name in engines:
            engines[name]["jit_percent"] = pct
    after = scrape_all(points)
    between = time.monotonic() - scraped_at
    stages: dict[str, Any] = {}
    gains = [delta(before.get(name, {}), after.get(name, {})) for name, *_ in points]
    writes = store_writes(gains, between)
    collectors: dict[str, Any] = {}
    for (name, *_), gained in zip(points, gains, strict=True):
        for metric, d in gained.items():
            s_ = summary(d, between) if metric in STAGES else {"count": 0}
            if s_["count"]:
                stages[f"{name} {metric}"] = {"stage": STAGES[metric], **s_}
        if gained.get(GC_PAUSES):
            collectors[name] = collector_pauses(gained[GC_PAUSES])
    out = {"rate": args.rate, "seconds": args.seconds, "warmup": args.warmup,
           "ack_every": s.ack_every,
           "pairs": runner.pair_count(s, args.rate),
           "achieved_msgs_s": step.achieved,
           "client": {"send_sent_p50_ms": step.sent_p50_ms, "send_sent_p99_ms": step.sent_p99_ms,
                      "send_deliver_p50_ms": step.p50_ms, "send_deliver_p99_ms": step.p99_ms,
                      "delivered": step.delivered, "offered": step.offered,
                      "errors": step.errors, "cpu_percent": step.client_cpu_percent},
           "stages": stages, "store_writes": writes, "cpu_percent": cpu,
           "wait_percent": waits, "engines": engines,
           "collectors": collectors}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"stages at {args.rate:.0f} msgs/s ({step.achieved} achieved)")
    for col in ("process", "stage", "count", "per s", "mean ms", "p50 <= ms", "p99 <= ms"):
        table.add_column(col)
    for key, v in stages.items():
        table.add_row(key.split()[0], v["stage"], str(v["count"]), str(v["per_s"]),
                      str(v["mean_ms"]), str(v["p50_le_ms"]), str(v["p99_le_ms"]))
    c = out["client"]
    table.add_row("client", "send -> sent", "", "", "", str(c["send_sent_p50_ms"]),
                  str(c["send_sent_p99_ms"]))
    table.add_row("client", "send -> deliver", "", "", "", str(c["send_deliver_p50_ms"]),
                  str(c["send_deliver_p99_ms"]))
    Console().print(table)
    Console().print(f"the benchmark's client processes used {c['cpu_percent']}% of one "
                    "core while they sent")
    if writes:
        Console().print("store writer, a second: " + ", ".join(
            f"{what.replace('_', ' ')} {v['per_s']:,.0f}" for what, v in writes.items()))
    Console().print("CPU during the step (% of one core): " + ", ".join(
        f"{name} {pct:.0f}" for name, pct in cpu.items()))
    Console().print("waiting for a core (% of the step; its first thread's, which is a "
                    "Python runtime's event loop): " + ", ".join(
                        f"{name} {w['threads']:.0f} ({w['main']:.0f})"
                        for name, w in waits.items() if w["threads"] >= 1))
    for name, work in engines.items():
        Console().print(describe(name, work))
    for name, work in collectors.items():
        full = f", {work['gc_full_pauses']} of the oldest generation" \
            if work["gc_full_pauses"] else ""
        Console().print(f"{name}: {work['gc_pauses']} Python collector pauses "
                        f"({work['gc_pause_ms']:.0f} ms, longest <= "
                        f"{work['gc_pause_max_le_ms']:g} ms{full})")


if __name__ == "__main__":
    main()
