"""`msgctl chaos` against a real embedded deployment: process faults, their time to live,
healing (by command, by expiry, on down, and without the supervisor), and bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Deployment, msgctl, start_deployment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = start_deployment(tmp_path_factory.mktemp("chaos-cli"))
    yield d
    msgctl("down", "--home", str(d.home), check=False)


def chaos(dep: Deployment, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return msgctl("chaos", *args, "--home", str(dep.home), check=check)


def proc_state(pid: int) -> str:
    """R, S, T (stopped)... from /proc; '' when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def answers(port: int, timeout: float = 1.0) -> bool:
    """Does the gateway answer an HTTP request in time (a paused one does not)?"""
    try:
        # the gateway serves TLS, signed by the test session's CA (SSL_CERT_FILE)
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                ssl.create_default_context().wrap_socket(raw,
                                                         server_hostname="127.0.0.1") as s:
            s.settimeout(timeout)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_for(pred, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def in_force(dep: Deployment) -> list[dict]:
    return json.loads(chaos(dep, "status", "--json").stdout)["faults"]


def test_pause_freezes_until_healed(dep: Deployment) -> None:
    pid = dep.node_pid()
    out = json.loads(chaos(dep, "pause", "gateway.*", "--duration", "60s", "--json").stdout)
    assert out["kind"] == "pause" and out["targets"] == ["node.local"]
    assert out["expires"] - out["started"] == pytest.approx(60, abs=1)
    assert proc_state(pid) == "T" and not answers(dep.port)
    listed = in_force(dep)
    assert [f["id"] for f in listed] == [out["id"]]
    table = chaos(dep, "status").stdout
    assert out["id"] in table and "pause node.local" in table
    healed = chaos(dep, "heal", out["id"])
    assert f"healed {out['id']}" in healed.stdout
    wait_for(lambda: answers(dep.port))
    assert proc_state(pid) in ("R", "S") and dep.node_pid() == pid  # resumed, not restarted
    assert in_force(dep) == []


def test_a_fault_heals_when_its_duration_ends_without_the_cli(dep: Deployment) -> None:
    pid = dep.node_pid()
    chaos(dep, "pause", "node.*", "-d", "2s")  # the CLI is gone from here on
    assert proc_state(pid) == "T"
    wait_for(lambda: proc_state(pid) in ("R", "S"), 15)
    assert in_force(dep) == []
    ledger = json.loads((dep.home / "run" / "chaos.json").read_text())
    assert ledger["recent"][-1]["note"] == "expired"


def test_kill_crashes_and_the_supervisor_restarts(dep: Deployment) -> None:
    before = {r["program"]: r for r in dep.status()["runtimes"]}["node.local"]
    out = json.loads(chaos(dep, "kill", "sequencer.local", "--signal", "KILL", "--seed", "3",
                           "--json").stdout)
    assert out["targets"] == ["node.local"] and out["expires"] is None
    wait_for(lambda: dep.status()["runtimes"][0]["state"] == "RUNNING"
             and dep.status()["runtimes"][0]["pid"] != before["pid"])
    after = dep.status()["runtimes"][0]
    assert after["restarts"] == before["restarts"] + 1
    assert in_force(dep) == []  # a kill leaves nothing in force


def test_stop_keeps_a_program_down_for_its_duration(dep: Deployment) -> None:
    out = json.loads(chaos(dep, "stop", "node.local", "-d", "10s", "--json").stdout)
    assert dep.status()["runtimes"][0]["state"] == "STOPPED" and not answers(dep.port)
    wait_for(lambda: dep.status()["runtimes"][0]["state"] == "RUNNING", 60)
    assert answers(dep.port) and time.time() >= out["expires"]


@pytest.mark.parametrize(("args", "message"), [
    (("kill", "nothing-like-this"), "no program or runtime matches 'nothing-like-this'"),
    (("partition", "local", "mars"), "unknown region 'mars'; this deployment has local"),
    (("isolate", "local"), "needs a cluster topology with at least two regions"),
    (("pause", "node.*", "--duration", "forever"), "--duration must be a duration like 60s"),
    (("kill", "node.*", "--one", "--all"), "choose one of --one, --minority"),
    (("kill", "node.*", "--signal", "STOP"), "msgctl chaos pause"),
    (("kill", "node.*", "--minority"), "picks none of 1 running target"),
    (("link", "local", "local", "--latency", "fast"), "--latency must be a duration"),
    (("heal", "f999"), "no fault f999 is in force"),
])
def test_bad_input_is_one_line_and_exit_2(dep: Deployment, args: tuple[str, ...],
                                          message: str) -> None:
    proc = chaos(dep, *args, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert in_force(dep) == []


def test_nothing_running_is_exit_3(tmp_path: Path) -> None:
    proc = msgctl("chaos", "pause", "x", "--home", str(tmp_path / "none"), check=False)
    assert proc.returncode == 3 and "nothing is running" in proc.stderr


def test_down_heals_a_paused_program_first(tmp_path: Path) -> None:
    d = start_deployment(tmp_path)
    pid = d.node_pid()
    msgctl("chaos", "pause", "node.*", "-d", "5m", "--home", str(d.home))
    assert proc_state(pid) == "T"
    t0 = time.monotonic()
    msgctl("down", "--home", str(d.home))
    # resumed, so it stopped on SIGTERM rather than waiting out the kill timeout
    assert time.monotonic() - t0 < 8 and proc_state(pid) == ""
    ledger = json.loads((d.home / "run" / "chaos.json").read_text())
    assert ledger["faults"] == [] and ledger["recent"][-1]["note"] == "deployment stopped"


def test_heal_works_when_the_supervisor_is_gone(tmp_path: Path) -> None:
    d = start_deployment(tmp_path)
    pid = d.node_pid()
    msgctl("chaos", "pause", "node.*", "-d", "5m", "--home", str(d.home))
    sup = int((d.home / "run" / "supervisor.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    try:
        wait_for(lambda: proc_state(sup) in ("", "Z"), 10)
        status = msgctl("chaos", "status", "--home", str(d.home)).stdout
        assert "pause node.local" in status and "supervisor is gone" in status
        healed = msgctl("chaos", "heal", "--home", str(d.home))
        assert "healed f1" in healed.stdout
        assert proc_state(pid) in ("R", "S")
        assert json.loads(msgctl("chaos", "status", "--json", "--home",
                                 str(d.home)).stdout)["faults"] == []
    finally:
        os.killpg(pid, signal.SIGKILL)  # its supervisor is gone: clean up by hand
