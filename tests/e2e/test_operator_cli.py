"""The operator CLI on a real embedded deployment: `up --json`, `status --watch`, `logs` with
its filters and engine lines, `kill`, and tables that fit 80 columns."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loadtest import PROFILES_DIR
from tests.conftest import Deployment, free_port, msgctl, write_topology

pytestmark = pytest.mark.e2e

ACTION_KEYS = {"ok", "verb", "home", "running", "changed", "programs"}


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("operator")
    port = free_port()
    d = Deployment(root / "home", write_topology(root / "topology.yaml", port), port)
    out = json.loads(msgctl("up", "--home", str(d.home), "-t", str(d.topology),
                            "--json").stdout)
    assert set(out) >= ACTION_KEYS and out["verb"] == "up" and out["ok"] is True
    assert out["changed"] == ["node.local"] and out["already_up"] is False
    assert out["regions"][0]["ws_url"] == d.ws_url and out["took_s"] > 0
    (node,) = out["programs"]
    assert node["state"] == "RUNNING" and node["pid"] and "gateway.local" in node["runtimes"]
    yield d
    msgctl("down", "--home", str(d.home), check=False)


def cli(d: Deployment, *args: str, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return msgctl(*args, "--home", str(d.home), check=check, env=env)


def test_up_again_answers_in_json_too(dep: Deployment) -> None:
    out = json.loads(cli(dep, "up", "-t", str(dep.topology), "--json").stdout)
    assert out["ok"] and out["already_up"] is True and out["changed"] == []
    proc = cli(dep, "up", "-t", str(dep.topology), "--json", "--foreground", check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout)["code"] == 2


def test_status_watch_refreshes_until_its_count(dep: Deployment) -> None:
    t0 = time.monotonic()
    out = cli(dep, "status", "--watch", "--count", "3", "--interval", "0.5").stdout
    assert time.monotonic() - t0 >= 1.0  # two waits between three refreshes
    headers = [line for line in out.splitlines() if line.split()[:3] == ["region", "runtime",
                                                                         "state"]]
    assert len(headers) == 3, out
    lines = cli(dep, "status", "--watch", "--json", "-c", "2", "-i", "0.2").stdout.splitlines()
    assert len(lines) == 2
    assert all(json.loads(x)["runtimes"][0]["state"] == "RUNNING" for x in lines)
    for bad, message in ((("--interval", "0"), "--interval must be more than 0"),
                         (("--count", "0"), "--count must be at least 1")):
        proc = cli(dep, "status", "--watch", *bad, check=False)
        assert proc.returncode == 2 and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_status_watch_redraws_in_place_on_a_terminal_until_ctrl_c(dep: Deployment) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "msgctl.cli.app", "status", "--watch", "--interval", "0.3",
         "--home", str(dep.home)], stdin=follower, stdout=follower, stderr=follower,
        env={**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"}, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and seen.count(b"restarts") < 3:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    assert seen.count(b"restarts") >= 3, seen[-2000:]
    assert b"\x1b[" in seen and re.search(rb"\x1b\[\d*A", seen)  # the cursor goes back up
    assert code == 0


def write_engine_log(d: Deployment, lines: list[str]) -> Path:
    path = d.home / "logs" / "kafka.local.log"
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def kafka_stamp(t: float) -> str:
    return "[" + datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3] + "]"


def test_logs_interleave_engine_lines_and_filter(dep: Deployment) -> None:
    before = time.time() - 3600
    write_engine_log(dep, [
        f"{kafka_stamp(before)} INFO an hour ago (kafka.server.KafkaServer)",
        f"{kafka_stamp(time.time() + 1)} WARN disk slow (kafka.log.LogManager)",
        "\tat the stack of that warning",
    ])
    out = cli(dep, "logs", "-n", "2").stdout.splitlines()
    # the engine's newest lines are the newest of all: they come last, not first and cut
    assert out[0].startswith("kafka.local") and "WARN disk slow" in out[0], out
    assert out[1].startswith("kafka.local") and "at the stack of that warning" in out[1], out
    rows = [json.loads(x) for x in cli(dep, "logs", "--json", "-n", "200").stdout.splitlines()]
    assert all(set(r) == {"time", "program", "region", "level", "line"} for r in rows)
    times = [datetime.fromisoformat(r["time"]).timestamp() for r in rows]
    assert times == sorted(times)
    assert {r["program"] for r in rows} >= {"kafka.local", "gateway.local", "sequencer.local"}
    warned = [r for r in rows if r["level"] == "warning"]
    assert [r["line"] for r in warned][-2:] == ["disk slow (kafka.log.LogManager)",
                                                "\tat the stack of that warning"]
    # the filters, alone and together
    level = cli(dep, "logs", "--level", "warning", "-n", "100").stdout
    assert "disk slow" in level and "listening on" not in level
    grep = cli(dep, "logs", "--grep", "listening on", "--json").stdout.splitlines()
    assert grep and all(json.loads(x)["program"] == "gateway.local" for x in grep)
    since = cli(dep, "logs", "--since", "30m", "kafka*").stdout
    assert "disk slow" in since and "an hour ago" not in since
    at = datetime.fromtimestamp(before - 60).isoformat(timespec="seconds")
    assert "an hour ago" in cli(dep, "logs", "--since", at, "kafka*").stdout
    both = cli(dep, "logs", "--region", "local", "--level", "warn", "--grep", "stack",
               "--since", "10m", "--json").stdout.splitlines()
    assert [json.loads(x)["line"] for x in both] == ["\tat the stack of that warning"]
    assert cli(dep, "logs", "--grep", "no line says this").stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (("--grep", "("), "bad --grep '('"),
    (("--since", "soon"), "bad --since 'soon'"),
    (("--level", "loud"), "bad --level 'loud'"),
    (("--region", "mars"), "no region 'mars'"),
    (("-n", "-1"), "--lines must be 0 or more"),
])
def test_bad_log_options_are_one_line_and_exit_2(dep: Deployment, args: tuple[str, ...],
                                                 message: str) -> None:
    proc = cli(dep, "logs", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_logs_follow_filters_new_lines(dep: Deployment) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "msgctl.cli.app", "logs", "-f", "-n", "0", "--json", "--grep",
         "MARK", "--level", "warning", "--home", str(dep.home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []],
                     daemon=True).start()
    got: list[dict[str, Any]] = []
    try:
        # until it follows (it reads the files' ends first, later on a busy machine), a
        # matching line now and then; once one comes through, the lines under test
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline:
            write_engine_log(dep, [f"{kafka_stamp(time.time())} ERROR MARK sync"])
            with contextlib.suppress(queue.Empty):
                got.append(json.loads(lines.get(timeout=1)))
        assert got and got[0]["line"] == "MARK sync", got
        write_engine_log(dep, [f"{kafka_stamp(time.time())} INFO MARK but only info",
                               f"{kafka_stamp(time.time())} ERROR MARK one",
                               "\tMARK continues the error",
                               f"{kafka_stamp(time.time())} ERROR no mark"])
        got = []
        while len(got) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                row = json.loads(lines.get(timeout=1))
                if row["line"] != "MARK sync":
                    got.append(row)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert [(r["program"], r["level"], r["line"]) for r in got] == [
        ("kafka.local", "error", "MARK one"), ("kafka.local", "error",
                                               "\tMARK continues the error")]
    assert code == 0


def wait_for(check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_kill_is_restarted_by_the_supervisor(dep: Deployment) -> None:
    pid = dep.node_pid()
    out = json.loads(cli(dep, "kill", "gateway*", "--signal", "TERM", "--json").stdout)
    assert set(out) >= ACTION_KEYS and out["verb"] == "kill" and out["ok"]
    assert out["changed"] == ["node.local"] and out["pids"] == {"node.local": pid}
    assert out["signal"] == "TERM"

    def back() -> bool:
        rows = dep.status()["runtimes"]
        return all(r["state"] == "RUNNING" and r["pid"] not in (None, pid) for r in rows)
    wait_for(back)
    assert dep.status()["runtimes"][0]["restarts"] >= 1


def fits(text: str, width: int = 80) -> None:
    assert text.strip(), text
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, "\n".join(wide)


def test_doctor_fits_80_columns_and_answers_one_json_object(tmp_path: Path) -> None:
    long_home = tmp_path / ("a-rather-long-deployment-home-" * 3)
    env = {"COLUMNS": "80"}
    for topo in ("regions/local.yaml", "regions/one-region.yaml"):
        proc = msgctl("doctor", "-t", topo, "--port-offset", "31000", "--home", str(long_home),
                      check=False, env=env)
        fits(proc.stdout)
        # the disk check's path is whole (here too long for the column: under the table)
        assert str(tmp_path) in proc.stdout, proc.stdout
        assert "port 127.0.0.1:38400" in proc.stdout
    out = json.loads(msgctl("doctor", "--json", "--home", str(long_home), check=False).stdout)
    assert isinstance(out, dict) and set(out) >= {"ok", "topology", "checks"}
    assert out["topology"] == "local" and isinstance(out["ok"], bool)
    assert {c["check"] for c in out["checks"]} >= {"python", "topology", "disk"}


def test_load_profiles_and_infra_fetch_fit_80_columns() -> None:
    table = msgctl("load", "profiles", env={"COLUMNS": "80"}).stdout
    fits(table)
    assert str(PROFILES_DIR) in table
    assert re.search(r"groups\s+100\s+200\s+90s\s+1:1, groups 5/20/50\s+chat", table), table
    from msgctl.infra import fetch

    # scripts/test fetches the jars before pytest: a missing one is a failure, not a skip
    assert all(fetch.cached(e, v) is not None for e, v in (
        ("kafka", "4.1.1"), ("cassandra", "5.0.6"), ("s3", "2.6.0"))), \
        "the engine jars are not cached here (run 'msgctl infra fetch')"
    table = msgctl("infra", "fetch", "-t", "regions/one-region.yaml",
                   env={"COLUMNS": "80"}).stdout
    fits(table)
    assert str(fetch.cache_root()) in table
    assert re.search(r"kafka\s+4\.1\.1\s+\d+\s+\d+ MB\s+cached\s+kafka-4\.1\.1", table), table


def test_infra_status_json_with_nothing_running(tmp_path: Path) -> None:
    proc = msgctl("infra", "status", "--json", "--home", str(tmp_path / "none"), check=False)
    assert proc.returncode == 3
    assert json.loads(proc.stdout) == {"home": str(tmp_path / "none"), "running": False,
                                       "engines": []}
    proc = msgctl("infra", "stop", "--json", "--home", str(tmp_path / "none"))
    out = json.loads(proc.stdout)
    assert set(out) >= ACTION_KEYS and out["verb"] == "infra stop" and out["changed"] == []


def test_infra_start_restart_logs_stop_on_a_real_engine(tmp_path: Path) -> None:
    """Redis alone (the other engines external) starts in a second: the engine verbs'
    JSON, an engine's restart, and its own log format read back with times and levels."""
    import shutil

    import yaml

    # scripts/test installs redis-server: its absence is a failure, not a skip
    assert shutil.which("redis-server") is not None, "redis-server is not installed"
    port = free_port()
    topo = tmp_path / "redis.yaml"
    topo.write_text(yaml.safe_dump({"name": "redis-only", "backend": "cluster", "regions": [{
        "name": "local", "host": "127.0.0.1", "gateway": {"port": free_port()},
        "engines": {"kafka": {"external": "127.0.0.1:9"},
                    "cassandra": {"external": "127.0.0.1", "datacenter": "dc1"},
                    "redis": {"port": port}}}]}))
    home = str(tmp_path / "home")
    out = json.loads(msgctl("infra", "start", "-t", str(topo), "--home", home, "--json").stdout)
    try:
        assert set(out) >= ACTION_KEYS and out["verb"] == "infra start" and out["ok"]
        assert out["changed"] == ["redis.local"] and out["programs"][0]["kind"] == "engine"
        pid = out["programs"][0]["pid"]
        again = json.loads(msgctl("infra", "start", "-t", str(topo), "--home", home,
                                  "--json").stdout)
        assert again["already_up"] is True and again["changed"] == []
        restarted = json.loads(msgctl("restart", "redis*", "--home", home, "--json").stdout)
        assert restarted["ok"] and restarted["changed"] == ["redis.local"]
        assert restarted["dependents"] == []  # no runtime runs here
        (p,) = restarted["programs"]
        assert p["state"] == "RUNNING" and p["pid"] != pid
        rows = [json.loads(x) for x in msgctl("logs", "redis*", "--home", home, "--json",
                                              "--since", "5m").stdout.splitlines()]
        assert any(r["line"].startswith("Ready to accept connections") and r["level"] == "info"
                   for r in rows), rows
        assert all(r["time"] and r["region"] == "local" for r in rows)
    finally:
        out = json.loads(msgctl("infra", "stop", "--home", home, "--json").stdout)
    assert out["ok"] and out["verb"] == "infra stop" and out["changed"] == ["redis.local"]
    assert out["running"] is False
