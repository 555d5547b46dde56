"""benchmarks/store_batches.py against the test session's one-region cluster: it reports
the node's group-commit window (the one `msgctl up` writes), a median for each size both
ways, and leaves no scratch table behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from msgctl.home import Home
from tests.bench import scripts
from tests.conftest import Deployment

batches = scripts.load("store_batches")
SCRIPT = scripts.BENCHMARKS / "store_batches.py"


def _tables(dep: Deployment) -> set[str]:
    cluster, cql = batches.session(dep.home, Home(dep.home).deployment() or {})
    try:
        rows = cql.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'msgctl'")
        return {r.table_name for r in rows}
    finally:
        cluster.shutdown()


def test_store_batches_reports_both_ways_and_cleans_up(cluster_deployment: Deployment) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--home", str(cluster_deployment.home),
                           "--sizes", "1,4", "--reps", "3", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(proc.stdout)
    assert out["group_window"] == "1ms"
    assert out["reps"] == 3
    assert [s["partitions"] for s in out["sizes"]] == [1, 4]
    assert all(s["one_batch_ms"] > 0 and s["apart_ms"] > 0 for s in out["sizes"])
    assert not {t for t in _tables(cluster_deployment) if t.startswith("bench_batches_")}


def test_store_batches_refuses_a_home_without_a_cluster(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--home", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no cluster deployment is running" in proc.stderr


def test_store_batches_refuses_sizes_that_are_not_numbers(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--home", str(tmp_path),
                           "--sizes", "1,x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--sizes takes whole numbers" in proc.stderr
