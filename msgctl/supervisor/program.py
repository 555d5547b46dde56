"""What the supervisor runs: one `Program` per supervised process, as written to plan.json.

A program is either a runtime host (probed with HTTP ``/readyz``) or an engine
(Kafka, Cassandra, Redis: probed in their own protocol). The probe spec is a
small JSON mapping so plan.json stays readable and the daemon needs no
topology to act on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

RUNTIME, ENGINE = "runtime", "engine"


@dataclass
class Program:
    """One supervised process and the runtimes (or the engine) it hosts.

    ``probe`` is ``{"kind": "http", "url": ...}``, ``{"kind": "cql", "host", "port",
    "datacenter"}``, ``{"kind": "kafka", "bootstrap": ...}`` or ``{"kind": "redis",
    "url": ...}``; when it is empty the program is probed at ``health_url``.
    ``depends_on`` names programs that must be RUNNING before this one starts; stop
    runs in the reverse of the plan's order. ``prepare`` is a one-shot command run
    before the first start unless ``prepare_creates`` already exists (a Kafka storage
    format). ``start_timeout`` / ``stop_timeout`` of None take the supervisor's.
    ``cgroup`` is where in its region's cgroup it runs when the deployment has
    cgroups (network faults, see `chaos.cgroups`).
    """

    name: str
    region: str
    runtimes: list[str]
    argv: list[str]
    health_url: str
    endpoint: str
    depends_on: list[str] = field(default_factory=list)
    kind: str = RUNTIME
    probe: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    start_timeout: float | None = None
    stop_timeout: float | None = None
    prepare: list[str] = field(default_factory=list)
    prepare_creates: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # engine version, ports, data dir
    cgroup: str = "programs"  # its role in the region's cgroup (chaos): programs or proxy

    @property
    def probe_spec(self) -> dict[str, Any]:
        return self.probe or {"kind": "http", "url": self.health_url}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Program:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
