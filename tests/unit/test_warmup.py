"""When an engine's warm-up ends (msgctl.infra.warmup.JitWatch), and how the supervisor
and `up` treat a warming engine (without a JVM: the JIT is a scripted counter)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from msgctl.home import Home
from msgctl.infra import warmup
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
    assert warmup.compiler_ticks(os.getpid()) == 0  # Python has no compiler threads
    assert warmup.compiler_ticks(2 ** 22 + 12345) is None  # no such process


def test_run_leaves_other_engines_alone() -> None:
    assert warmup.run({"kind": "redis", "url": "redis://x"}, 10.0) == {}
    assert warmup.run({"kind": "kafka", "bootstrap": "x:1"}, 0.0) == {}


def test_keyspace_names_are_cql_identifiers() -> None:
    assert warmup.keyspace("us-east") == "msgctl_warmup_us_east"
    assert warmup.keyspace("EU.West 1") == "msgctl_warmup_eu_west_1"


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
    port = free_port()
    engine = Program(name="kafka.r", region="r", runtimes=["kafka"],
                     argv=[sys.executable, "-c", SERVER, str(port)],
                     health_url=f"http://127.0.0.1:{port}/", endpoint="-", kind=ENGINE,
                     warmup_s=42.0)
    sup = Supervisor(Home(tmp_path).ensure(), [engine])
    await sup.start_program("kafka.r")  # returns at RUNNING: dependents need not wait
    m = sup.managed["kafka.r"]
    try:
        view = sup.snapshot()["programs"][0]
        assert view["state"] == RUNNING and view["warmup"] == {"state": "warming"}
        assert view["message"] == "warming up"
        release.set()
        t0 = time.monotonic()
        while sup.snapshot()["programs"][0]["warmup"]["state"] == "warming":
            assert time.monotonic() - t0 < 10
            await asyncio.sleep(0.05)
        view = sup.snapshot()["programs"][0]
        assert view["warmup"]["state"] == "done" and view["warmup"]["transactions"] == 3
        assert view["message"] == "" and calls == [(42.0, m.proc.pid)]
    finally:
        release.set()
        await sup.stop_program("kafka.r")


async def test_a_failed_warm_up_leaves_the_engine_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: object, **_k: object) -> dict:
        raise RuntimeError("broker said no")

    monkeypatch.setattr(warmup, "run", broken)
    port = free_port()
    engine = Program(name="cassandra.r", region="r", runtimes=["cassandra"],
                     argv=[sys.executable, "-c", SERVER, str(port)],
                     health_url=f"http://127.0.0.1:{port}/", endpoint="-", kind=ENGINE,
                     warmup_s=5.0)
    sup = Supervisor(Home(tmp_path).ensure(), [engine])
    await sup.start_program("cassandra.r")
    try:
        for _ in range(100):
            if sup.managed["cassandra.r"].warmup.get("state") != "warming":
                break
            await asyncio.sleep(0.05)
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
    port = free_port()
    engine = Program(name="kafka.r", region="r", runtimes=["kafka"],
                     argv=[sys.executable, "-c", SERVER, str(port)],
                     health_url=f"http://127.0.0.1:{port}/", endpoint="-", kind=ENGINE,
                     warmup_s=60.0)
    sup = Supervisor(Home(tmp_path).ensure(), [engine],
                     RestartPolicy(base_delay=0.05, max_delay=0.1))
    await sup.start_program("kafka.r")
    m = sup.managed["kafka.r"]
    try:
        first = m.proc.pid
        os.kill(first, 9)  # a crash while warming: `up` must not wait on it forever
        t0 = time.monotonic()
        while not (m.state == RUNNING and m.proc.pid != first):
            assert time.monotonic() - t0 < 15
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(stopped.wait, 5)  # the warm-up thread was told
        assert m.warmup["state"] == "interrupted" and m.message == ""
        await asyncio.sleep(0.3)
        assert calls == [first]  # the restarted engine is not warmed again
    finally:
        await sup.stop_program("kafka.r")
