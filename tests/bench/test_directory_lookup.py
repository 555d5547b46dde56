"""benchmarks/directory_lookup.py on a private redis-server: both lookups run, agree on
every user's gateway (the script checks that before it times them) and report figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "directory_lookup.py"


def test_directory_lookup_reports_both_ways() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--users", "30", "--gateways", "3",
                           "--rounds", "5", "--json"], capture_output=True, text=True,
                          timeout=120, check=True)
    out = json.loads(proc.stdout)
    assert (out["users"], out["gateways"], out["rounds"]) == (30, 3, 5)
    assert out["per_user_hashes_us_cpu"] > 0 and out["route_hashes_us_cpu"] > 0
    assert out["ratio"] == round(out["route_hashes_us_cpu"] / out["per_user_hashes_us_cpu"], 3)
