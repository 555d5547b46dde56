"""Will the topology fit this machine? Memory and CPU estimates for `msgctl doctor`.

Per process resident memory as measured on this project's stacks (a JVM holds
its heap plus metaspace, JIT code, threads and off-heap buffers: Cassandra with a
512 MiB heap ran at ~1.0 GiB, Kafka with 512 MiB at ~0.55 GiB, each Python runtime
at 100-150 MiB after traffic). The estimate is deliberately on the high side.
"""

from __future__ import annotations

import os
from pathlib import Path

from msgctl import topology as topo_mod
from msgctl.infra import mirror
from msgctl.infra.catalog import CASSANDRA, KAFKA, REDIS, S3
from msgctl.infra.programs import provisioned

JVM_OVERHEAD_MB = {CASSANDRA: 550, KAFKA: 150, S3: 120}
REDIS_MB = 30
RUNTIME_MB = 130  # a Python runtime process (100-150 MiB measured after traffic)
MIRROR_OVERHEAD_MB = 150


def estimate_mb(topo: topo_mod.Topology) -> dict[str, int]:
    """Estimated resident MiB per part of the topology (engines, mirrors, runtimes)."""
    out: dict[str, int] = {}
    for region in topo.regions:
        for spec in provisioned(region.engines):
            if spec.engine == REDIS:
                out[f"redis.{region.name}"] = REDIS_MB
            else:
                out[f"{spec.engine}.{region.name}"] = spec.heap_mb + JVM_OVERHEAD_MB[spec.engine]
        # cluster: sequencer, presence, push and the gateways; embedded: one node
        runtimes = 3 + region.gateway_processes if topo.backend == "cluster" else 1
        out[f"runtimes.{region.name}"] = runtimes * RUNTIME_MB
    if topo.backend == "cluster" and len(topo.regions) > 1 and all(
            KAFKA in r.engines and r.engines[KAFKA].provisioned for r in topo.regions):
        for region in topo.regions:
            out[f"mirror.{region.name}"] = mirror.DEFAULT_HEAP_MB + MIRROR_OVERHEAD_MB
    return out


def jvm_count(topo: topo_mod.Topology) -> int:
    return sum(1 for part in estimate_mb(topo) if part.split(".")[0] in
               (CASSANDRA, KAFKA, S3, "mirror"))


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """MemTotal, MemAvailable... in MiB (empty where /proc is not there)."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0]) // 1024
    except (OSError, ValueError):
        pass
    return out


def checks(topo: topo_mod.Topology, mem: dict[str, int] | None = None,
           cpus: int | None = None) -> list[tuple[str, str, str]]:
    """(check, ok|warn|fail, detail) for memory and CPU."""
    mem = meminfo() if mem is None else mem
    cpus = cpus or os.cpu_count() or 1
    need = sum(estimate_mb(topo).values())
    out: list[tuple[str, str, str]] = []
    total, available = mem.get("MemTotal"), mem.get("MemAvailable")
    if total is None or available is None:
        out.append(("memory", "warn", f"~{need} MiB needed; cannot read /proc/meminfo"))
    elif need > total:
        out.append(("memory", "fail", f"~{need} MiB needed, the machine has {total} MiB; "
                    "lower heap_mb or use fewer regions"))
    elif need > available:
        out.append(("memory", "warn", f"~{need} MiB needed, {available} MiB available now "
                    f"(of {total}); stop something or lower heap_mb"))
    else:
        out.append(("memory", "ok", f"~{need} MiB needed, {available} MiB available"))
    jvms = jvm_count(topo)
    if jvms and jvms > 2 * cpus:
        out.append(("cpu", "warn", f"{jvms} JVMs and {len(topo.regions)} region(s) on {cpus} "
                    "cores: starts are slow and latency is high; expect minutes, not seconds"))
    else:
        out.append(("cpu", "ok", f"{cpus} cores"))
    return out
