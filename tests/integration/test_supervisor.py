"""The supervisor against real child processes: readiness, backoff to FATAL, stop escalation."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from msgctl.home import Home
from msgctl.supervisor import priority
from msgctl.supervisor.daemon import FATAL, RUNNING, STOPPED, Managed, Supervisor
from msgctl.supervisor.policy import RestartPolicy
from msgctl.topology import Program
from tests.conftest import free_port

# a program that answers /readyz and, when asked, ignores SIGTERM
SERVER = """
import http.server, json, signal, sys
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ready": True, "runtimes": {"gateway": "ready"}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def program(name: str, argv: list[str], port: int) -> Program:
    return Program(name=name, region="r", runtimes=["gateway"], argv=argv,
                   health_url=f"http://127.0.0.1:{port}/readyz", endpoint="-")


async def killed_and_restarted(m: Managed) -> None:
    """SIGKILL the program and wait (up to 5 s) for the supervisor to have it RUNNING again."""
    assert m.proc is not None
    first = m.proc.pid
    os.kill(first, 9)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if m.state == RUNNING and m.proc.pid != first:
            break
    assert m.state == RUNNING and m.proc.pid != first


async def test_a_crash_looping_program_ends_in_fatal(tmp_path: Path) -> None:
    home = Home(tmp_path).ensure()
    port = free_port()
    crash = program("crashy", [sys.executable, "-c", "import sys; sys.exit(3)"], port)
    policy = RestartPolicy(base_delay=0.01, max_delay=0.05, max_retries=3)
    sup = Supervisor(home, [crash], policy, start_timeout=5)
    t0 = time.monotonic()
    await sup.start_program("crashy")
    m = sup.managed["crashy"]
    assert m.state == FATAL and m.last_exit == 3
    assert m.tracker.total == 3  # three restarts, then it gave up
    assert time.monotonic() - t0 < 10
    state = json.loads(home.state_file.read_text())
    assert state["programs"][0]["state"] == FATAL
    assert "gave up" in state["programs"][0]["message"]


async def test_ready_restart_after_kill_and_sigkill_escalation(tmp_path: Path) -> None:
    home = Home(tmp_path).ensure()
    port = free_port()
    prog = program("stubborn", [sys.executable, "-c", SERVER, str(port), "stubborn"], port)
    sup = Supervisor(home, [prog], RestartPolicy(base_delay=0.05), stop_timeout=1.0)
    await sup.start_program("stubborn")
    m = sup.managed["stubborn"]
    assert m.state == RUNNING and m.runtimes == {"gateway": "ready"}
    await killed_and_restarted(m)
    assert m.tracker.total == 1
    t0 = time.monotonic()
    await sup.stop_program("stubborn")  # ignores SIGTERM: SIGKILL after the timeout
    took = time.monotonic() - t0
    assert m.state == STOPPED and m.proc.returncode == -9
    assert 0.9 <= took < 5


def slack_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/timerslack_ns").read_text())


async def test_a_program_starts_and_restarts_at_its_cpu_priority_and_timer_slack(
        tmp_path: Path) -> None:
    home = Home(tmp_path).ensure()
    port = free_port()
    # a positive value, which any user may set (the cluster's gateways and sequencers
    # ask for a negative one, which needs root)
    prog = program("niced", [sys.executable, "-c", SERVER, str(port), "plain"], port)
    prog.nice = 4
    prog.timer_slack_us = 700
    port2 = free_port()
    plain = program("plain", [sys.executable, "-c", SERVER, str(port2), "plain"], port2)
    sup = Supervisor(home, [prog, plain], RestartPolicy(base_delay=0.05), stop_timeout=2.0)
    await sup.start_program("niced")
    await sup.start_program("plain")
    m = sup.managed["niced"]
    group_known = Path(f"/proc/{m.proc.pid}/autogroup").exists()
    assert priority.read(m.proc.pid) == (4 if group_known else None, 4)
    assert priority.read(sup.managed["plain"].proc.pid) == (0 if group_known else None, 0)
    # the pid supervised is the program's own (the shell that set the slack exec'd it)
    assert Path(f"/proc/{m.proc.pid}/cmdline").read_bytes().split(b"\0")[2] == SERVER.encode()
    assert slack_of(m.proc.pid) == 700_000
    assert slack_of(sup.managed["plain"].proc.pid) == slack_of(os.getpid())
    await killed_and_restarted(m)
    assert priority.read(m.proc.pid) == (4 if group_known else None, 4)
    assert slack_of(m.proc.pid) == 700_000
    await sup.stop_program("niced")
    await sup.stop_program("plain")
