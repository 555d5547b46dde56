"""Orchestration of `msgctl bench`: what is measured, how, and the figures it reports.

The measured process (the region's node, or the bare relay for the ceiling) is
pinned to CPU 0 and the client workers to the other CPUs for the run, so the
load generator does not steal the measured process's core; the node's own
affinity is restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from msgctl.bench import driver
from msgctl.errors import MsgctlError
from runtime import auth

P99_LIMIT_MS = 200.0
CONNS_PER_WORKER = 4500
# per sending connection, well under the gateway's per-connection rate limit
PER_CONNECTION_RATE = 100.0


@dataclass
class Settings:
    idle_connections: int = 18_000
    step_seconds: float = 3.0
    warmup_seconds: float = 1.0
    pairs: int = 20
    start_rate: float = 500.0
    growth: float = 1.5
    max_rate: float = 40_000.0
    catch_up_messages: int = 5_000
    client_workers: int = 2
    relay: bool = True
    ack_every: int = driver.ACK_EVERY  # each receiver acks every this many messages

    @classmethod
    def quick(cls) -> Settings:
        return cls(idle_connections=500, step_seconds=1.0, warmup_seconds=0.5, pairs=4,
                   start_rate=200.0, growth=2.0, max_rate=3_200.0, catch_up_messages=500)


@dataclass
class Target:
    url: str  # ws:// gateway URL
    http: str  # http:// base for /metrics
    pid: int  # the measured process
    secret: str
    receiver_url: str = ""  # the receivers' gateway (another region's), "": `url`


@dataclass
class Step:
    rate: float
    achieved: float
    p50_ms: float  # send -> deliver (the receiving client's clock, same machine)
    p99_ms: float
    sent_p50_ms: float  # send -> sent (durable)
    sent_p99_ms: float
    delivered: int
    offered: int
    errors: int
    ok: bool
    # the CPU the benchmark's client processes used while they sent, in % of one core:
    # on a machine they share with the server, what they take is not the server's
    client_cpu_percent: float = 0.0


@dataclass
class Search:
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        passing = [s for s in self.steps if s.ok]
        return max(passing, key=lambda s: s.achieved) if passing else None


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise MsgctlError(f"cannot read the memory of process {pid}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _pin(pid: int, cpus: set[int]) -> set[int] | None:
    try:
        before = os.sched_getaffinity(pid)
        os.sched_setaffinity(pid, cpus)
        for task in os.listdir(f"/proc/{pid}/task"):  # threads too (the SQLite writer)
            os.sched_setaffinity(int(task), cpus)
        return before
    except (OSError, ValueError):
        return None


def _unpin(pid: int, cpus: set[int] | None) -> None:
    if cpus is None:
        return
    try:
        os.sched_setaffinity(pid, cpus)
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), cpus)
    except OSError:
        pass


def _client_cpus() -> set[int]:
    cpus = set(range(os.cpu_count() or 1))
    return cpus - {0} or cpus


def _start_worker(cert_file: str | None) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, _client_cpus())
    # a spawned worker imports the caller's main module again, and a script's imports may
    # set SSL_CERT_FILE their own way: the CA the caller trusts when it starts the pool wins
    if cert_file:
        os.environ["SSL_CERT_FILE"] = cert_file


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                               initializer=_start_worker,
                               initargs=(os.environ.get("SSL_CERT_FILE"),))


def _metric(http: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"{http}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def measure_idle(target: Target, s: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    n = s.idle_connections
    run = uuid.uuid4().hex[:6]
    tokens = [auth.issue(target.secret, f"idle-{run}-{i}", "d", 3600) for i in range(n)]
    workers = max(1, math.ceil(n / CONNS_PER_WORKER))
    chunks = [tokens[i::workers] for i in range(workers)]
    base_conns = _metric(target.http, "msgctl_connections") or 0.0
    rss_before = rss_bytes(target.pid)
    hold = 6.0 + n / 1500
    progress(f"idle: opening {n} connections from {workers} client processes")
    with _pool(workers) as pool:
        futures = [pool.submit(driver.idle_worker, target.url, c, hold) for c in chunks]
        best, stable_since, t0 = 0.0, time.monotonic(), time.monotonic()
        while time.monotonic() - t0 < hold + 30:
            held = (_metric(target.http, "msgctl_connections") or 0.0) - base_conns
            if held > best:
                best, stable_since = held, time.monotonic()
            if held >= n or time.monotonic() - stable_since > 8.0:
                break
            time.sleep(0.25)
        time.sleep(1.0)  # let the last handshakes' garbage settle
        rss_after = rss_bytes(target.pid)
        held = (_metric(target.http, "msgctl_connections") or 0.0) - base_conns
        results = [f.result() for f in futures]
    # the next part must not measure the gateway tearing these connections down
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (_metric(target.http, "msgctl_connections") or 0.0) <= base_conns:
            break
        time.sleep(0.25)
    opened = sum(r["opened"] for r in results)
    per_conn = (rss_after - rss_before) / held if held > 0 else math.nan
    return {"target": n, "held": int(held), "opened": opened,
            "failures": sum(r["failures"] for r in results),
            "open_seconds": round(max(r["open_seconds"] for r in results), 2),
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "rss_per_connection_kib": round(per_conn / 1024, 2)}


def _pairs(secret: str, count: int, relay: bool) -> list[driver.Pair]:
    run = uuid.uuid4().hex[:6]
    out = []
    for i in range(count):
        sender, receiver = f"bs-{run}-{i}", f"br-{run}-{i}"
        conv = receiver if relay else f"bench-{run}-{i}"
        out.append(driver.Pair(conv, auth.issue(secret, sender, "d", 3600),
                               auth.issue(secret, receiver, "d", 3600), receiver))
    return out


def pair_count(s: Settings, rate: float) -> int:
    """The 1:1 conversations a step at `rate` uses: `s.pairs`, or one per
    PER_CONNECTION_RATE msgs/s when that is more."""
    return max(s.pairs, math.ceil(rate / PER_CONNECTION_RATE))


def run_step(target: Target, s: Settings, rate: float, relay: bool,
             duration: float | None = None) -> Step:
    pairs = _pairs(target.secret, pair_count(s, rate), relay)
    workers = s.client_workers
    groups = [pairs[i::workers] for i in range(workers)]
    with _pool(workers) as pool:
        futures = [pool.submit(driver.traffic_worker, target.url, g, rate / workers,
                               s.warmup_seconds, duration or s.step_seconds, relay,
                               target.receiver_url or target.url, s.ack_every)
                   for g in groups]
        results = [f.result() for f in futures]
    lat = [x for r in results for x in r["latencies_ms"]]
    sent_lat = [x for r in results for x in r["sent_latencies_ms"]]
    offered = sum(r["offered_in_window"] for r in results)
    delivered = sum(r["delivered_in_window"] for r in results)
    errors = sum(r["counts"]["errors"] + r["counts"]["disorder"] for r in results)
    window = duration or s.step_seconds
    p99 = percentile(lat, 99)
    # everything offered in the window must arrive, fast enough, without errors
    ok = offered > 0 and delivered >= 0.99 * offered and p99 < P99_LIMIT_MS and errors == 0
    traffic_s = max((r["traffic_s"] for r in results), default=0.0)
    cpu = sum(r["cpu_seconds"] for r in results)
    return Step(rate, round(delivered / window, 1), round(percentile(lat, 50), 2),
                round(p99, 2), round(percentile(sent_lat, 50), 2),
                round(percentile(sent_lat, 99), 2), delivered, offered, errors, ok,
                round(100 * cpu / traffic_s, 1) if traffic_s > 0 else 0.0)


def search_max(target: Target, s: Settings, relay: bool,
               progress: Callable[[str], None]) -> Search:
    """Raise the rate geometrically until a step fails, then bisect twice between."""
    search = Search()
    rate = s.start_rate
    last_ok: float | None = None
    first_bad: float | None = None
    while rate <= s.max_rate:
        progress(f"{'relay' if relay else 'throughput'}: {rate:.0f} msg/s")
        step = run_step(target, s, rate, relay)
        search.steps.append(step)
        if not step.ok:
            # one slow fsync or pause on this noisy machine must not end the search
            progress(f"{'relay' if relay else 'throughput'}: {rate:.0f} msg/s (again)")
            step = run_step(target, s, rate, relay)
            search.steps.append(step)
        if not step.ok:
            first_bad = rate
            break
        last_ok = rate
        rate *= s.growth
    for _ in range(2):
        if last_ok is None or first_bad is None:
            break
        mid = (last_ok + first_bad) / 2
        progress(f"{'relay' if relay else 'throughput'}: {mid:.0f} msg/s (refine)")
        step = run_step(target, s, mid, relay)
        search.steps.append(step)
        if step.ok:
            last_ok = mid
        else:
            first_bad = mid
    return search


def measure_catch_up(target: Target, s: Settings) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    sender, receiver = f"cs-{run}", f"cr-{run}"
    # the backlog is written from several devices so no one connection passes the rate limit
    devices = max(1, math.ceil(s.catch_up_messages / (PER_CONNECTION_RATE * 2)))
    with _pool(1) as pool:
        r = pool.submit(driver.catch_up_worker, target.url, f"catch-{run}",
                        [auth.issue(target.secret, sender, f"d{i}", 3600)
                         for i in range(min(devices, 50))],
                        auth.issue(target.secret, receiver, "d", 3600), receiver,
                        s.catch_up_messages).result()
    return {"messages": r["messages"], "seconds": round(r["seconds"], 3),
            "per_second": round(r["messages"] / r["seconds"], 1) if r["seconds"] else None}


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_relay(host: str, secret: str) -> tuple[subprocess.Popen[str], Target]:
    port = _free_port(host)
    proc = subprocess.Popen([sys.executable, "-m", "msgctl.bench.relay", host, str(port), secret],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise MsgctlError(f"the bare relay did not start: {line.strip()}")
    # keep its pipe drained: a full pipe would stall the relay and skew the ceiling
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, Target(f"ws://{host}:{port}/", f"http://{host}:{port}", proc.pid, secret)


def _step_dict(step: Step | None) -> dict[str, Any] | None:
    return None if step is None else dict(step.__dict__)


def run_bench(target: Target, s: Settings, progress: Callable[[str], None],
              parts: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": dict(s.__dict__), "cpus": os.cpu_count(),
                           "p99_limit_ms": P99_LIMIT_MS}
    saved = _pin(target.pid, {0}) if (os.cpu_count() or 1) > 1 else None
    out["pinned"] = saved is not None
    try:
        if "idle" in parts:
            out["idle"] = measure_idle(target, s, progress)
        if "throughput" in parts:
            search = search_max(target, s, False, progress)
            best = search.best
            out["throughput"] = {"max_msgs_per_s": best.achieved if best else 0.0,
                                 "at": _step_dict(best),
                                 "steps": [_step_dict(x) for x in search.steps]}
            if best:
                progress(f"latency at half of {best.achieved:.0f} msg/s")
                half = run_step(target, s, best.rate / 2, False, s.step_seconds * 2)
                out["latency_at_half"] = _step_dict(half)
        if "catch-up" in parts:
            progress("catch-up")
            out["catch_up"] = measure_catch_up(target, s)
    finally:
        _unpin(target.pid, saved)
    if "throughput" in parts and s.relay:
        host = target.url.split("//", 1)[1].split(":", 1)[0]
        proc, relay = start_relay(host, target.secret)
        try:
            _pin(relay.pid, {0})
            search = search_max(relay, s, True, progress)
            best = search.best
            out["relay"] = {"max_msgs_per_s": best.achieved if best else 0.0,
                            "at": _step_dict(best),
                            "steps": [_step_dict(x) for x in search.steps]}
        finally:
            proc.kill()
            proc.wait()
        mine = out["throughput"]["max_msgs_per_s"]
        ceiling = out["relay"]["max_msgs_per_s"]
        out["ratio_to_relay"] = round(mine / ceiling, 3) if ceiling else None
    out["targets"] = targets(out)
    return out


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, measured against (reported, never asserted)."""
    rows = []
    idle = out.get("idle")
    if idle:
        rows.append({"target": "idle connections per gateway process >= 18000",
                     "value": idle["held"], "met": idle["held"] >= 18_000})
        rows.append({"target": "RSS per idle connection <= 16 KiB",
                     "value": idle["rss_per_connection_kib"],
                     "met": idle["rss_per_connection_kib"] <= 16})
    if out.get("ratio_to_relay") is not None:
        rows.append({"target": "embedded throughput >= 40% of the bare relay",
                     "value": out["ratio_to_relay"], "met": out["ratio_to_relay"] >= 0.4})
    half = out.get("latency_at_half")
    if half:
        rows.append({"target": "p99 send->deliver < 50 ms at half the maximum rate",
                     "value": half["p99_ms"], "met": half["p99_ms"] < 50})
    return rows


def dumps(out: dict[str, Any]) -> str:
    return json.dumps(out, indent=2, default=str)
