"""`msgctl restart|kill|stop|start|down` against a real supervisor of small stand-in programs:
an "engine" and a runtime that depends on it (a plan written by hand, no topology), so the
engine cases run in seconds without Kafka or Cassandra."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from msgctl.deploy.lifecycle import launch_supervisor, wait_up
from msgctl.home import Home, write_json_atomic
from msgctl.supervisor.program import ENGINE, Program
from tests.conftest import free_port, msgctl

# answers /readyz once it listens
SERVER = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ready": True, "runtimes": {sys.argv[2]: "ready"}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

ACTION_KEYS = {"ok", "verb", "home", "running", "changed", "programs"}
PROGRAM_KEYS = {"name", "region", "kind", "state", "pid", "restarts", "runtimes"}


@dataclass
class Stack:
    home: Path

    def cli(self, *args: str, check: bool = True) -> Any:
        return msgctl(*args, "--home", str(self.home), check=check)

    def json(self, *args: str, check: bool = True) -> dict[str, Any]:
        out = json.loads(self.cli(*args, "--json", check=check).stdout)
        assert isinstance(out, dict)
        return out

    def programs(self) -> dict[str, dict[str, Any]]:
        state = json.loads((self.home / "run" / "state.json").read_text())
        return {p["name"]: p for p in state["programs"]}


def program(name: str, runtime: str, port: int, **extra: Any) -> Program:
    return Program(name=name, region="r", runtimes=[runtime],
                   argv=[sys.executable, "-c", SERVER, str(port), runtime],
                   health_url=f"http://127.0.0.1:{port}/readyz", endpoint="-", **extra)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    home = Home(tmp_path / "home").ensure()
    store = program("store.r", "store", free_port(), kind=ENGINE, start_timeout=30.0)
    api = program("api.r", "api", free_port(), depends_on=["store.r"])
    write_json_atomic(home.plan_file, {"programs": [store.to_dict(), api.to_dict()]})
    proc = launch_supervisor(home)
    wait_up(home, proc, 60)
    yield Stack(home.root)
    msgctl("down", "--home", str(home.root), check=False)


def check_action(out: dict[str, Any], verb: str) -> None:
    assert set(out) >= ACTION_KEYS, out
    assert out["verb"] == verb
    assert all(set(p) >= PROGRAM_KEYS for p in out["programs"]), out


def test_restarting_an_engine_names_its_dependents_and_restarts_them_when_asked(
        stack: Stack) -> None:
    before = {n: p["pid"] for n, p in stack.programs().items()}
    out = stack.cli("restart", "store*").stdout
    assert "restarted store.r" in out and "restarted api.r" not in out
    assert "left running, they depend on the restarted engine and reconnect to it: api.r" in out
    after = stack.programs()
    assert after["store.r"]["pid"] != before["store.r"]
    assert after["api.r"]["pid"] == before["api.r"]
    got = stack.json("restart", "store.r", "--with-dependents")
    check_action(got, "restart")
    assert got["ok"] and got["changed"] == ["store.r", "api.r"]
    assert got["dependents"] == ["api.r"] and got["dependents_restarted"] is True
    assert {p["name"]: p["state"] for p in got["programs"]} == {"store.r": "RUNNING",
                                                              "api.r": "RUNNING"}
    now = stack.programs()
    assert all(now[n]["pid"] != after[n]["pid"] for n in now)
    assert "restarted with the engine, as they depend on it: api.r" in stack.cli(
        "restart", "store.r", "-d").stdout
    # a runtime's restart takes nothing along
    got = stack.json("restart", "api*", "--with-dependents")
    assert got["changed"] == ["api.r"] and got["dependents"] == []
    assert got["dependents_restarted"] is False


def wait_running(stack: Stack, name: str, other_than: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        p = stack.programs()[name]
        if p["state"] == "RUNNING" and p["pid"] not in (None, other_than):
            return p
        time.sleep(0.1)
    raise AssertionError(stack.programs()[name])


def test_kill_signals_and_the_supervisor_restarts(stack: Stack) -> None:
    pid = stack.programs()["api.r"]["pid"]
    out = stack.cli("kill", "api*").stdout
    assert f"killed api.r (pid {pid}) with SIGKILL" in out
    p = wait_running(stack, "api.r", pid)
    assert p["restarts"] == 1
    got = stack.json("kill", "api.r", "--signal", "term")
    check_action(got, "kill")
    assert got["ok"] and got["changed"] == ["api.r"] and got["signal"] == "TERM"
    assert got["pids"] == {"api.r": p["pid"]}
    p2 = wait_running(stack, "api.r", p["pid"])
    assert p2["restarts"] == 2
    # stopped programs are not signalled (nor started again)
    stack.cli("stop", "api.r")
    assert "nothing to kill: no match is running (api.r STOPPED)" in stack.cli(
        "kill", "api*").stdout
    assert stack.programs()["api.r"]["state"] == "STOPPED"


BAD = [
    (("kill", "nothing-like-this"), "no program or runtime matches 'nothing-like-this'"),
    (("kill", "api.r", "--signal", "LOUD"), "unknown signal 'LOUD'"),
    (("kill", "api.r", "--signal", "STOP"), "msgctl chaos pause"),
    (("restart", "nothing-like-this"), "no program or runtime matches"),
    (("stop", "nothing-like-this"), "no program or runtime matches"),
]


def test_bad_targets_and_signals_are_one_line_and_exit_2(stack: Stack) -> None:
    for args, message in BAD:
        proc = stack.cli(*args, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        # with --json, stdout says the same for scripts
        proc = stack.cli(*args, "--json", check=False)
        out = json.loads(proc.stdout)
        assert proc.returncode == 2 and out["ok"] is False and out["code"] == 2
        assert message in out["error"] and out["verb"] == args[0]
    assert {p["state"] for p in stack.programs().values()} == {"RUNNING"}


def test_stop_start_and_down_answer_in_json(stack: Stack) -> None:
    got = stack.json("stop", "store*")
    check_action(got, "stop")
    assert got["ok"] and got["changed"] == ["store.r"]
    assert {p["name"]: p["state"] for p in got["programs"]}["store.r"] == "STOPPED"
    got = stack.json("start", "store*")
    check_action(got, "start")
    assert got["ok"] and got["changed"] == ["store.r"]
    got = stack.json("down")
    check_action(got, "down")
    assert got["ok"] and not got["running"] and set(got["changed"]) == {"store.r", "api.r"}
    assert got["was_running"] is True and got["killed"] is False
    assert {p["state"] for p in got["programs"]} == {"STOPPED"}
    again = stack.json("down")
    assert again["ok"] and again["changed"] == [] and again["was_running"] is False
    # nothing runs: exit 3, and a JSON answer all the same
    proc = stack.cli("kill", "api.r", "--json", check=False)
    assert proc.returncode == 3 and json.loads(proc.stdout)["code"] == 3
