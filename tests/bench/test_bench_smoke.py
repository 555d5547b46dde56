"""`msgctl bench --quick` against a real deployment: every part runs and reports sane figures.

The figures themselves are not asserted against targets (that is what the full
`msgctl bench` is for); this checks that each measurement really happened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import msgctl, start_deployment

pytestmark = pytest.mark.e2e


def test_quick_bench_measures_every_part(tmp_path: Path) -> None:
    dep = start_deployment(tmp_path)
    try:
        proc = msgctl("bench", "--quick", "--json", "--home", str(dep.home), timeout=300)
        out = json.loads(proc.stdout)
    finally:
        dep.down()
    idle = out["idle"]
    assert idle["held"] == idle["target"] == 500 and idle["failures"] == 0
    assert 0 < idle["rss_per_connection_kib"] < 200
    tp = out["throughput"]
    assert tp["max_msgs_per_s"] > 0 and tp["at"]["ok"] is True
    for step in tp["steps"]:
        assert step["errors"] == 0  # no error frames and no out-of-order delivery
        if step["ok"]:
            assert step["delivered"] >= 0.99 * step["offered"]
            assert step["p99_ms"] < out["p99_limit_ms"]
    half = out["latency_at_half"]
    assert half["rate"] == tp["at"]["rate"] / 2 and half["p50_ms"] <= half["p99_ms"]
    # what the load's own processes used while they sent (some, and at most every core)
    assert 0 < half["client_cpu_percent"] <= 100 * (os.cpu_count() or 1)
    assert out["catch_up"]["messages"] == 500 and out["catch_up"]["per_second"] > 0
    assert out["relay"]["max_msgs_per_s"] > 0 and out["ratio_to_relay"] > 0
    assert {t["target"] for t in out["targets"]} >= {
        "RSS per idle connection <= 16 KiB", "embedded throughput >= 40% of the bare relay"}


def test_bench_without_a_deployment_is_one_line(tmp_path: Path) -> None:
    r = msgctl("bench", "--quick", "--home", str(tmp_path / "none"), check=False)
    assert r.returncode == 3 and r.stderr.startswith("msgctl: nothing is running")
    r = msgctl("bench", "--only", "nope", "--home", str(tmp_path / "none"), check=False)
    assert r.returncode == 2 and "unknown part" in r.stderr
    r = msgctl("bench", "--ack-every", "0", "--home", str(tmp_path / "none"), check=False)
    assert r.returncode == 2 and r.stderr.strip() == "msgctl: --ack-every must be at least 1"
