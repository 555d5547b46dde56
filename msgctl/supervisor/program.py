"""What the supervisor runs: one `Program` per supervised process, as written to plan.json.

A program is either a runtime host (probed with HTTP ``/readyz``) or an engine
(Kafka, Cassandra, Redis: probed in their own protocol). The probe spec is a
small JSON mapping so plan.json stays readable and the daemon needs no
topology to act on it.
"""

from __future__ import annotations

import fnmatch
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
    cgroups (network faults, see `chaos.cgroups`). ``nice`` is its CPU priority, set
    as it starts (an engine's first start with a warm-up: once that is over), and
    ``timer_slack_us`` its threads' timer slack (0: the kernel's default), set before it
    starts (both `msgctl.supervisor.priority`).
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
    # seconds at most to drive an engine's JVM once it is ready, until its JIT settles
    # (msgctl.infra.warmup); dependents start meanwhile, `up` waits for it
    warmup_s: float = 0.0
    # its CPU priority (msgctl.supervisor.priority): below 0 for the event loops of the
    # message path, which wait for a core behind the engines' threads on a small host
    nice: int = 0
    # how late (microseconds) the kernel may end its threads' timed waits: more than the
    # default for an engine whose idle threads poll for work (msgctl.supervisor.priority)
    timer_slack_us: int = 0

    @property
    def probe_spec(self) -> dict[str, Any]:
        return self.probe or {"kind": "http", "url": self.health_url}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Program:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def match(programs: list[Program], pattern: str) -> list[str]:
    """Programs (in plan order) matching a glob on the program or on a runtime it hosts
    (``gateway.local``). A bare name, with no region and no wildcard (``sequencer``,
    ``kafka``), means that name in every region."""
    patterns = [pattern]
    if "." not in pattern and not any(c in pattern for c in "*?["):
        patterns.append(f"{pattern}.*")
    out = []
    for p in programs:
        names = [p.name, *(f"{r}.{p.region}" for r in p.runtimes)]
        if any(fnmatch.fnmatch(n, pat) for n in names for pat in patterns):
            out.append(p.name)
    return out


def engine_dependents(programs: list[Program], names: list[str]) -> list[str]:
    """The runtime programs (in plan order, not in `names`) that depend on an engine among
    `names`, directly or through other programs, in the engine's own region.

    A runtime keeps clients and producers open on its region's engines and reconnects
    them itself when the engine comes back; `msgctl restart` names these so the operator
    knows what rides out the restart, and restarts them too with ``--with-dependents``.
    Engines that wait for each other (a Cassandra node joining its seed) and another
    region's runtimes (waiting once for the first sequencer's schema) only wait at their
    first start, and are not counted.
    """
    by_name = {p.name: p for p in programs}
    dependents: dict[str, set[str]] = {p.name: set() for p in programs}
    for p in programs:
        for dep in p.depends_on:
            if dep in dependents:
                dependents[dep].add(p.name)
    out: set[str] = set()
    for name in names:
        engine = by_name.get(name)
        if engine is None or engine.kind != ENGINE:
            continue
        todo, seen = [name], {name}
        while todo:
            for nxt in dependents[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        out |= {n for n in seen if by_name[n].kind == RUNTIME
                and by_name[n].region == engine.region}
    return [p.name for p in programs if p.name in out and p.name not in names]


def restart_wait(programs: list[Program], names: list[str], start_timeout: float,
                 stop_timeout: float) -> float:
    """Seconds a restart of `names` may take before the supervisor answers: each one stopped
    (its stop timeout) and started until its probe passes (its own start timeout: 180 s
    for an engine), one after the other, as `Supervisor.restart` does; and a margin."""
    total = 30.0
    for p in programs:
        if p.name in names:
            total += (p.stop_timeout or stop_timeout) + (p.start_timeout or start_timeout)
    return total
