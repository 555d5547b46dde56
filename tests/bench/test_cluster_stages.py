"""benchmarks/cluster_stages.py: reading the runtimes' histograms (no deployment needed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster_stages.py"
spec = importlib.util.spec_from_file_location("cluster_stages", SCRIPT)
assert spec is not None and spec.loader is not None
stages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stages)


def metrics_text(values: list[float]) -> str:
    r = CollectorRegistry()
    h = Histogram("msgctl_txn_seconds", "txn", buckets=(0.005, 0.01, 0.025, 0.05), registry=r)
    for v in values:
        h.observe(v)
    return generate_latest(r).decode()


def test_the_step_is_what_the_histogram_gained() -> None:
    before = stages.histograms(metrics_text([0.001] * 50))
    after = stages.histograms(metrics_text([0.001] * 50 + [0.02] * 98 + [0.04] * 2))
    s = stages.summary(stages.delta(before, after)["msgctl_txn_seconds"])
    # only the 100 observations of the step count: p50 and p99 fall in their buckets
    assert s["count"] == 100
    assert s["p50_le_ms"] == 25.0 and s["p99_le_ms"] == 50.0
    assert abs(s["mean_ms"] - 20.4) < 0.01


def test_the_count_per_second_is_over_the_time_between_the_scrapes() -> None:
    before = stages.histograms(metrics_text([0.001] * 7))
    after = stages.histograms(metrics_text([0.001] * 7 + [0.004] * 250))
    s = stages.summary(stages.delta(before, after)["msgctl_txn_seconds"], 20.0)
    assert s["count"] == 250 and s["per_s"] == 12.5
    assert "per_s" not in stages.summary(stages.delta(before, after)["msgctl_txn_seconds"])


def test_a_histogram_that_did_not_move_has_no_count() -> None:
    text = stages.histograms(metrics_text([0.003]))
    assert stages.summary(stages.delta(text, text)["msgctl_txn_seconds"]) == {"count": 0}
    assert stages.histograms("no metrics here\n") == {}


def test_cpu_is_what_each_program_used_during_the_step(tmp_path: Path) -> None:
    import json
    import os
    import time

    from msgctl.home import Home

    home = Home(tmp_path)
    home.state_file.parent.mkdir(parents=True, exist_ok=True)
    # this test's own process stands in for a program; a gone pid is left out
    home.state_file.write_text(json.dumps({"programs": [
        {"name": "busy.local", "pid": os.getpid()}, {"name": "gone.local", "pid": 2 ** 22 + 7},
        {"name": "stopped.local", "pid": None}]}))
    before, t0 = stages.cpu_ticks(home), time.monotonic()
    while time.monotonic() - t0 < 0.5:  # spin half a second
        pass
    cpu = stages.cpu_percent(before, stages.cpu_ticks(home), time.monotonic() - t0)
    assert list(cpu) == ["busy.local"]
    assert 20 <= cpu["busy.local"] <= 110  # a spinning process, on a possibly busy machine
    # a program whose counter went back (it restarted) is left out
    assert stages.cpu_percent({"x": 500}, {"x": 10}, 1.0) == {}


@pytest.mark.parametrize("flag", ["--pairs", "--ack-every"])
def test_a_count_below_one_is_refused_before_anything_runs(flag: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--home", str(tmp_path), flag, "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{flag} must be at least 1" in done.stderr


def test_a_negative_warmup_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--home", str(tmp_path), "--warmup",
                           "-1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--warmup must be 0 or more" in done.stderr
