"""`msgctl doctor`'s memory and CPU verdicts for a topology (pure arithmetic)."""

from __future__ import annotations

from pathlib import Path

from msgctl import topology as topo_mod
from msgctl.infra import capacity

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> topo_mod.Topology:
    return topo_mod.load(ROOT / "regions" / name)


def test_two_regions_fit_24_gib_but_not_4() -> None:
    topo = load("two-region.yaml")
    parts = capacity.estimate_mb(topo)
    assert {"cassandra.us-east", "cassandra.eu-west", "mirror.us-east", "mirror.eu-west",
            "kafka.eu-west", "redis.eu-west", "runtimes.us-east"} <= set(parts)
    need = sum(parts.values())
    assert 4_000 < need < 8 * 1024  # the budget for two regions
    roomy = capacity.checks(topo, {"MemTotal": 24_000, "MemAvailable": 20_000}, cpus=8)
    assert [r for _, r, _ in roomy] == ["ok", "ok"]
    tight = dict((c, (r, d)) for c, r, d in capacity.checks(
        topo, {"MemTotal": 8_000, "MemAvailable": 3_000}, cpus=2))
    assert tight["memory"][0] == "warn" and "available" in tight["memory"][1]
    assert tight["cpu"][0] == "warn"
    small = capacity.checks(topo, {"MemTotal": 4_000, "MemAvailable": 3_000}, cpus=2)
    assert small[0][1] == "fail" and "heap_mb" in small[0][2]


def test_three_regions_need_more_than_two_and_the_embedded_default_almost_nothing() -> None:
    two = sum(capacity.estimate_mb(load("two-region.yaml")).values())
    three = sum(capacity.estimate_mb(load("three-region.yaml")).values())
    local = sum(capacity.estimate_mb(load("local.yaml")).values())
    assert three > two > 10 * local
    assert capacity.jvm_count(load("three-region.yaml")) == 9
    assert capacity.jvm_count(load("one-region.yaml")) == 3  # no mirror for one region
    assert capacity.checks(load("local.yaml"), {"MemTotal": 1000, "MemAvailable": 500},
                           cpus=1)[1][1] == "ok"


def test_meminfo_reads_mib(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24576000 kB\nMemAvailable:   20480000 kB\nHugePages_Total: 0\n")
    assert capacity.meminfo(f) == {"MemTotal": 24000, "MemAvailable": 20000}
    assert capacity.meminfo(tmp_path / "missing") == {}
