"""What a fault is: its kind, targets, options and time to live, checked against a deployment.

Network faults name regions (``partition`` and ``link``: two, ``isolate``: one);
process faults name a glob on programs or runtimes (``kafka.eu-west``,
``sequencer.*``) and a selector. Everything here is pure: the supervisor
(`chaos.host`) turns a checked spec into rules, toxics and signals.
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos import select
from chaos.netfilter import RegionNet

PARTITION, ISOLATE, LINK = "partition", "isolate", "link"
KILL, PAUSE, STOP = "kill", "pause", "stop"
NETWORK = (PARTITION, ISOLATE, LINK)
PROCESS = (KILL, PAUSE, STOP)
KINDS = NETWORK + PROCESS
INSTANT = (KILL,)  # done when applied: nothing stays in force
DEFAULT_DURATION = 60.0
MAX_DURATION = 24 * 3600.0
LINK_OPTIONS = ("latency_ms", "jitter_ms", "bandwidth_kbs", "reset", "blackhole")


class FaultError(ValueError):
    """A fault that cannot be applied as asked; `code` is the CLI's exit code (2: bad input,
    1: the machine or deployment cannot do it)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class FaultSpec:
    kind: str
    targets: list[str]
    duration: float | None = DEFAULT_DURATION
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultSpec:
        return cls(str(raw["kind"]), [str(t) for t in raw.get("targets", [])],
                   raw.get("duration"), dict(raw.get("options") or {}))


def signal_number(name: str | int) -> int:
    """KILL, SIGKILL, kill or 9 -> 9; STOP and CONT belong to `pause`."""
    text = str(name).strip().upper()
    if text.isdigit():
        num = int(text)
        valid = {s.value for s in signal.Signals}
        if num not in valid:
            raise FaultError(f"unknown signal {name}")
    else:
        try:
            num = signal.Signals[text if text.startswith("SIG") else f"SIG{text}"].value
        except KeyError:
            raise FaultError(f"unknown signal '{name}' (e.g. KILL, TERM, INT)") from None
    if num in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
        raise FaultError("STOP and CONT are what `msgctl chaos pause` does; use it")
    return num


def check(spec: FaultSpec, regions: list[RegionNet], *, multi_region_cluster: bool) -> None:
    """Raise FaultError unless the spec fits the deployment (programs are matched later)."""
    if spec.kind not in KINDS:
        raise FaultError(f"unknown fault '{spec.kind}'; one of {', '.join(KINDS)}")
    if spec.kind in INSTANT:
        spec.duration = None
    else:
        if spec.duration is None:
            spec.duration = DEFAULT_DURATION
        if not 0 < spec.duration <= MAX_DURATION:
            raise FaultError(f"--duration must be more than 0 and at most "
                             f"{MAX_DURATION / 3600:.0f}h")
    names = [r.name for r in regions]
    if spec.kind in NETWORK:
        want = 1 if spec.kind == ISOLATE else 2
        if len(spec.targets) != want:
            raise FaultError(f"{spec.kind} takes {want} region{'s' if want > 1 else ''}")
        for t in spec.targets:
            if t not in names:
                raise FaultError(f"unknown region '{t}'; this deployment has "
                                 f"{', '.join(names)}")
        if want == 2 and spec.targets[0] == spec.targets[1]:
            raise FaultError(f"{spec.kind} needs two different regions")
        if not multi_region_cluster:
            raise FaultError(f"{spec.kind} needs a cluster topology with at least two regions "
                             "(e.g. regions/two-region.yaml)")
        hosts = {r.name: r.host for r in regions}
        involved = names if spec.kind == ISOLATE else spec.targets
        for t in spec.targets:
            for other in involved:
                if other != t and hosts[other] == hosts[t]:
                    raise FaultError(f"{t} and {other} share the address {hosts[t]}; a "
                                     "network fault needs each region on an address of its own")
        if spec.kind == LINK:
            opts = spec.options
            unknown = set(opts) - set(LINK_OPTIONS)
            if unknown:
                raise FaultError(f"unknown link option(s) {', '.join(sorted(unknown))}")
            if not any(opts.get(k) for k in LINK_OPTIONS):
                raise FaultError("a link fault needs at least one of --latency, --jitter, "
                                 "--bandwidth, --reset, --blackhole")
    else:
        if len(spec.targets) != 1 or not spec.targets[0]:
            raise FaultError(f"{spec.kind} takes one glob on programs, e.g. 'sequencer.*'")
        mode = spec.options.get("select", "all")
        if mode not in select.MODES:
            raise FaultError(f"unknown selector '{mode}'; one of {', '.join(select.MODES)}")
        if spec.kind == KILL:
            spec.options["signal"] = signal_number(spec.options.get("signal", "KILL"))


def cuts(spec: FaultSpec, regions: list[RegionNet]) -> list[tuple[RegionNet, RegionNet]]:
    """The directed cuts (A's packets to B dropped) of a partition or isolation."""
    by = {r.name: r for r in regions}
    if spec.kind == ISOLATE:
        r = by[spec.targets[0]]
        others = [o for o in regions if o.name != r.name]
        return [(r, o) for o in others] + [(o, r) for o in others]
    a, b = by[spec.targets[0]], by[spec.targets[1]]
    return [(a, b)] if spec.options.get("one_way") else [(a, b), (b, a)]


def describe(spec: FaultSpec) -> str:
    """One line for people: ``partition us-east <-> eu-west``."""
    t = spec.targets
    if spec.kind == PARTITION:
        arrow = "->" if spec.options.get("one_way") else "<->"
        return f"partition {t[0]} {arrow} {t[1]}"
    if spec.kind == ISOLATE:
        return f"isolate {t[0]}"
    if spec.kind == LINK:
        o = spec.options
        parts = []
        if o.get("latency_ms") or o.get("jitter_ms"):
            parts.append(f"latency {o.get('latency_ms', 0)}ms±{o.get('jitter_ms', 0)}ms")
        if o.get("bandwidth_kbs"):
            parts.append(f"bandwidth {o['bandwidth_kbs']}KB/s")
        if o.get("reset"):
            parts.append("reset")
        if o.get("blackhole"):
            parts.append("blackhole")
        return f"link {t[0]} <-> {t[1]}: {', '.join(parts)}"
    if spec.kind == KILL:
        sig = spec.options.get("signal", signal.SIGKILL)
        return f"kill -{signal.Signals(sig).name.removeprefix('SIG')} {t[0]}"
    return f"{spec.kind} {t[0]}"
