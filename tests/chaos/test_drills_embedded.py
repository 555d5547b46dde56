"""`msgctl drill` against an embedded deployment: a drill runs end to end and writes its
journal; a store that loses acknowledged messages makes the drill report them lost; bad
drill files and too small deployments are refused in one line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.chaos.drills import records, run, shortened
from tests.conftest import Deployment, msgctl, start_deployment

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = start_deployment(tmp_path_factory.mktemp("drills"))
    yield d
    msgctl("down", "--home", str(d.home), check=False)


def test_reconnect_storm_is_valid_with_a_complete_journal(dep: Deployment,
                                                          tmp_path: Path) -> None:
    drill_file = shortened("reconnect-storm", tmp_path, **{
        "traffic.duration": "16s", "traffic.clients": 6, "faults.0.at": "5s",
        "faults.1.at": "10s"})
    out = tmp_path / "journal"
    proc, result = run(dep.home, drill_file, out)
    assert proc.returncode == 0, (result["counts"], result.get("witnesses"), proc.stderr)
    assert result["valid"] and result["ok"] and result["steady_state_after"]
    assert all(v == 0 for v in result["counts"].values())
    assert result["sends"]["acknowledged"] == result["sends"]["invoked"] > 100
    for name in ("history.jsonl", "result.json", "probes.json", "timeline.png", "drill.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "result.json").read_text())["valid"]
    hist = records(out)
    # every device dropped twice and was resumed on a new connection
    opens: dict[str, int] = {}
    for r in hist:
        if r["kind"] == "conn" and r["type"] == "open":
            opens[r["process"]] = opens.get(r["process"], 0) + 1
    assert len(opens) == 6 and all(n >= 3 for n in opens.values()), opens
    assert [r["id"] for r in hist if r["kind"] == "nemesis" and r["type"] == "start"] == [
        "n1", "n2"]
    phases = [r["name"] for r in hist if r["kind"] == "phase"]
    assert phases[:3] == ["steady", "setup", "traffic"] and "final-read" in phases
    probes = json.loads((out / "probes.json").read_text())
    assert probes["before"]["ok"] and probes["after"]["ok"]


def test_a_kill_on_the_embedded_node_loses_nothing(dep: Deployment, tmp_path: Path) -> None:
    drill_file = shortened("kill-sequencer", tmp_path, **{
        "traffic.duration": "15s", "faults.0.at": "5s"})
    proc, result = run(dep.home, drill_file, tmp_path / "j")
    assert proc.returncode == 0, (result["counts"], result.get("witnesses"))
    assert result["faults"][0]["targets"] == ["node.local"]
    assert result["sends"]["acknowledged"] > 100 and result["counts"]["lost"] == 0


def test_a_store_that_drops_acknowledged_messages_is_caught(dep: Deployment,
                                                            tmp_path: Path) -> None:
    """Deliberately break the durable path: delete stored messages behind the node's back
    while a drill runs. The checker must call them lost, and the drill must fail."""
    drill_file = shortened("kill-sequencer", tmp_path, **{
        "traffic.duration": "12s", "faults": [], "converge.timeout": "10s"})
    out = tmp_path / "broken"
    proc = subprocess.Popen(
        [sys.executable, "-m", "msgctl.cli.app", "drill", "run", str(drill_file),
         "--home", str(dep.home), "--out", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    history = out / "history.jsonl"
    while time.monotonic() < deadline:  # wait for acknowledged sends
        if history.exists() and history.read_text().count('"type":"ok"') >= 20:
            break
        time.sleep(0.2)
    convs = [r["conv"] for r in records(out) if r["kind"] == "conv"]
    db = sqlite3.connect(dep.home / "data" / "local.db", timeout=10)
    marks = ",".join("?" * len(convs))
    with db:
        gone = db.execute(f"SELECT conv, cid FROM messages WHERE conv IN ({marks}) AND seq <= 2",
                          convs).fetchall()
        db.execute(f"DELETE FROM messages WHERE conv IN ({marks}) AND seq <= 2", convs)
    db.close()
    stdout, stderr = proc.communicate(timeout=300)
    assert gone
    assert proc.returncode == 1, stderr
    result = json.loads(stdout)
    acked = {(r["conv"], r["cid"]) for r in records(out)
             if r["kind"] == "send" and r["type"] == "ok"}
    assert not result["valid"]
    assert result["counts"]["lost"] == len(set(gone) & acked) > 0
    witness = result["witnesses"]["lost"][0]
    assert witness["region"] == "local" and (witness["conv"], witness["cid"]) in set(gone)


def test_an_unknown_drill_names_the_bundled_ones(dep: Deployment) -> None:
    proc = msgctl("drill", "run", "no-such-drill", "--home", str(dep.home), check=False)
    assert proc.returncode == 2 and "bundled: " in proc.stderr and "partition" in proc.stderr


def test_a_bad_drill_file_is_one_line_per_error(dep: Deployment, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"traffic": {"duration": "1 fortnight", "clients": 0},
                                    "faults": [{"at": "2s", "fault": {"pause": "x"}}]}))
    proc = msgctl("drill", "run", str(path), "--home", str(dep.home), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert any("bad.yaml: traffic.duration:" in x for x in lines), lines
    assert any("bad.yaml: traffic.clients:" in x for x in lines), lines
    assert any("bad.yaml: faults[0].duration: is required" in x for x in lines), lines


def test_a_drill_needing_two_regions_says_so_in_one_line(dep: Deployment) -> None:
    proc = msgctl("drill", "run", "partition", "--home", str(dep.home), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "needs 2 regions and test has 1" in proc.stderr


def test_drill_list(dep: Deployment) -> None:
    rows = json.loads(msgctl("drill", "list", "--json").stdout)
    names = [r["name"] for r in rows]
    bundled = sorted(p.stem for p in (ROOT / "chaos" / "drills").glob("*.yaml"))
    assert names == bundled and "partition" in names and "failover" in names
    text = msgctl("drill", "list").stdout
    assert len(text.strip().splitlines()) == len(bundled) + 1  # a header and one line each
