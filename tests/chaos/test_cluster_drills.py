"""Drills on the one-region cluster (real Kafka, Cassandra, Redis, two gateways): a sequencer
killed mid-burst and a gateway killed under its clients lose nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.drills import records, run, shortened
from tests.conftest import Deployment

pytestmark = pytest.mark.e2e


def test_kill_sequencer_mid_burst(cluster_deployment: Deployment, tmp_path: Path) -> None:
    dep = cluster_deployment
    before = {r["program"]: r["restarts"] for r in dep.status()["runtimes"]}
    drill_file = shortened("kill-sequencer", tmp_path, **{
        "traffic.duration": "30s", "faults.0.at": "10s"})
    proc, result = run(dep.home, drill_file, tmp_path / "j", timeout=600)
    assert proc.returncode == 0, (result["counts"], result.get("witnesses"), proc.stderr)
    assert result["valid"] and result["sends"]["acknowledged"] > 300
    assert result["faults"][0]["targets"] == ["sequencer.local"]
    after = {r["program"]: r["restarts"] for r in dep.status()["runtimes"]}
    assert after["sequencer.local"] == before["sequencer.local"] + 1
    assert all(r["state"] == "RUNNING" for r in dep.status()["runtimes"])


def test_gateway_kill_moves_its_clients_to_the_other_gateway(cluster_deployment: Deployment,
                                                             tmp_path: Path) -> None:
    dep = cluster_deployment
    drill_file = shortened("gateway-kill", tmp_path, **{
        "traffic.duration": "25s", "faults.0.at": "8s"})
    out = tmp_path / "j"
    proc, result = run(dep.home, drill_file, out, timeout=600)
    assert proc.returncode == 0, (result["counts"], result.get("witnesses"), proc.stderr)
    killed = result["faults"][0]["targets"]
    assert len(killed) == 1 and killed[0].startswith("gateway-")
    port = dep.port + int(killed[0].split("-")[1].split(".")[0]) - 1
    hist = records(out)
    opens: dict[str, list[str]] = {}
    for r in hist:
        if r["kind"] == "conn" and r["type"] == "open":
            opens.setdefault(r["process"], []).append(r["gateway"])
    moved = [gws for gws in opens.values() if f":{port}/" in gws[0]]
    assert moved, opens  # some devices were on the killed gateway...
    # ...and came back at once on the other one (the killed one was restarting)
    assert all(len(gws) >= 2 and f":{port}/" not in gws[1] for gws in moved), moved
