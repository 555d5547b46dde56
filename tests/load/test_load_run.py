"""`msgctl load run` end to end: a short headless Locust run against a real deployment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import PROFILES_DIR
from tests.conftest import msgctl, start_deployment

pytestmark = pytest.mark.e2e


def test_steady_run_sends_delivers_in_order(tmp_path: Path) -> None:
    dep = start_deployment(tmp_path / "dep")
    out = tmp_path / "out"
    try:
        proc = msgctl("load", "run", str(PROFILES_DIR / "steady.yaml"), "--users", "6",
                      "--duration", "5s", "--workers", "1", "--home", str(dep.home),
                      "--out", str(out), "--json", check=False, timeout=90)
    finally:
        msgctl("down", "--home", str(dep.home), check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    summary = json.loads(proc.stdout)
    req = summary["requests"]
    assert req["connect"]["count"] == 6
    assert req["send->sent"]["count"] > 0
    assert req["send->delivered"]["count"] > 0
    assert req["send->sent"]["p50_ms"] is not None
    assert summary["totals"]["failures"] == 0, summary["failures"]
    assert summary["order_violations"] == 0
    assert summary["messages"]["sent"] > 0 and summary["messages"]["delivered"] > 0
    assert summary["profile"]["name"] == "steady" and summary["profile"]["users"] == 6
    assert summary["ok"] is True
    for name in ("summary.json", "locust_stats.csv", "locust_failures.csv",
                 "locust_stats_history.csv", "config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["requests"] == req


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    proc = msgctl("load", "run", "steady", "--home", str(tmp_path / "none"), check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"msgctl: nothing is running under {tmp_path / 'none'} " \
                                  "(run 'msgctl up')"
    bad = tmp_path / "bad.yaml"
    bad.write_text("users: 0\nspawn_rate: 1\nduration: 5s\n")
    proc = msgctl("load", "run", str(bad), "--home", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"msgctl: {bad}: users must be a positive integer"
    proc = msgctl("load", "run", "nope", check=False)
    assert proc.returncode == 2 and "bundled profile (catch-up, groups" in proc.stderr
    proc = msgctl("load", "run", "steady", "--duration", "soon", check=False)
    assert proc.returncode == 2 and "bad --duration 'soon'" in proc.stderr


def test_profiles_lists_the_bundled_ones() -> None:
    rows = json.loads(msgctl("load", "profiles", "--json").stdout)
    names = {r["name"] for r in rows}
    assert {"steady", "groups", "reconnect-storm", "catch-up", "presence-churn"} <= names
    assert all("error" not in r for r in rows)
