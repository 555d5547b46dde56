"""Drill files (``chaos/drills/*.yaml`` or any path): load, check, resolve against a deployment.

A drill is a Chaos Toolkit-style experiment: ``steady_state`` probes checked
before the faults and again after convergence, ``traffic`` the clients run
throughout, ``faults`` a schedule, ``converge`` how long to wait after the heal
for every region to serve every acknowledged message, ``rollbacks`` (always:
heal everything). Region names may be written ``{r0}``, ``{r1}``, … (the
deployment's regions in topology order), so one file fits any topology with
enough regions. Every mistake is reported as one line with its key path, e.g.
``partition.yaml: faults[0].duration: must be a duration like 60s``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import select
from chaos.faults import PROCESS, signal_number
from chaos.units import UnitError, bytes_per_second, seconds
from msgctl import yamltext

DRILLS_DIR = Path(__file__).resolve().parent / "drills"
FAULT_KINDS = ("partition", "isolate", "link", "kill", "pause", "stop", "restart",
               "drop_clients", "failover", "failback")
TIMED = ("partition", "isolate", "link", "pause", "stop")  # need a duration
CONV_KINDS = ("direct", "group")
_PLACEHOLDER = re.compile(r"\{r(\d+)\}")


class DrillError(ValueError):
    """A drill file that cannot be run; one message per problem, each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Conversations:
    kind: str
    count: int
    home: str  # "each", or a region (name or {rN})
    size: int = 2
    across: bool = True  # members spread over the regions (else all in the home region)


@dataclass
class Traffic:
    duration: float
    rate: float
    clients: int
    conversations: list[Conversations]
    body_bytes: tuple[int, int] = (20, 200)
    send_timeout: float = 5.0


@dataclass
class ScheduledFault:
    at: float
    kind: str
    args: dict[str, Any]
    duration: float | None = None

    def label(self) -> str:
        target = self.args.get("regions") or self.args.get("glob") or self.args.get("region")
        if isinstance(target, list):
            target = " ".join(target)
        return f"{self.kind} {target or ''}".strip()


@dataclass
class SteadyState:
    max_lag_ms: int = 5000
    max_send_p99_ms: int = 2000
    probe_sends: int = 20


@dataclass
class Drill:
    name: str
    description: str
    source: str
    steady_state: SteadyState
    traffic: Traffic
    faults: list[ScheduledFault]
    converge_timeout: float = 120.0
    needs_backend: str = "any"
    needs_regions: int = 1
    needs_network: bool = False
    needs_link_proxy: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    def resolve(self, regions: list[str]) -> Drill:
        """The drill with {rN} replaced by region names (a DrillError when N is too big)."""
        problems: list[str] = []

        def sub(value: Any, where: str) -> Any:
            if isinstance(value, str):
                def one(m: re.Match[str]) -> str:
                    i = int(m.group(1))
                    if i >= len(regions):
                        problems.append(f"{where}: {{r{i}}} but the deployment has "
                                        f"{len(regions)} region(s)")
                        return m.group(0)
                    return regions[i]
                return _PLACEHOLDER.sub(one, value)
            if isinstance(value, list):
                return [sub(v, where) for v in value]
            if isinstance(value, dict):
                return {k: sub(v, where) for k, v in value.items()}
            return value

        faults = [ScheduledFault(f.at, f.kind, sub(f.args, f"faults[{i}]"), f.duration)
                  for i, f in enumerate(self.faults)]
        convs = [Conversations(c.kind, c.count, sub(c.home, f"traffic.conversations[{i}]"),
                               c.size, c.across)
                 for i, c in enumerate(self.traffic.conversations)]
        for i, c in enumerate(convs):
            if c.home != "each" and c.home not in regions:
                problems.append(f"traffic.conversations[{i}].home: unknown region '{c.home}'")
        for i, f in enumerate(faults):
            names = f.args.get("regions") or ([f.args["region"]] if f.args.get("region") else [])
            for name in names:
                if name not in regions and name != "all":
                    problems.append(f"faults[{i}]: unknown region '{name}'")
        if problems:
            raise DrillError([f"{Path(self.source).name}: {p}" for p in problems])
        traffic = Traffic(self.traffic.duration, self.traffic.rate, self.traffic.clients, convs,
                          self.traffic.body_bytes, self.traffic.send_timeout)
        return Drill(self.name, self.description, self.source, self.steady_state, traffic,
                     faults, self.converge_timeout, self.needs_backend, self.needs_regions,
                     self.needs_network, self.needs_link_proxy, self.raw)


def bundled() -> dict[str, Path]:
    return {p.stem: p for p in sorted(DRILLS_DIR.glob("*.yaml"))}


def find(name_or_path: str) -> Path:
    """A bundled drill by name, else a file path; a DrillError naming the bundled ones."""
    drills = bundled()
    if name_or_path in drills:
        return drills[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise DrillError([f"no drill '{name_or_path}'; bundled: {', '.join(drills)} "
                      "(or give a path to a drill YAML)"])


def load(name_or_path: str) -> Drill:
    path = find(name_or_path)
    try:
        raw = yamltext.safe_load(path.read_text())
    except yamltext.YamlSyntaxError as exc:
        raise DrillError([f"{path.name}: {exc}"]) from None
    return parse(raw, str(path))


class _Checker:
    def __init__(self, source: str) -> None:
        self.where = Path(source).name
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path}: {message}")

    def mapping(self, raw: Any, path: str, known: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(path, "must be a mapping")
            return {}
        for key in sorted(set(raw) - known):
            self.fail(f"{path}.{key}" if path else key,
                      f"unknown key; known: {', '.join(sorted(known))}")
        return raw

    def duration(self, raw: dict[str, Any], key: str, path: str, default: float | None,
                 ) -> float | None:
        if key not in raw:
            if default is None:
                self.fail(f"{path}.{key}" if path else key, "is required (e.g. 60s)")
            return default
        try:
            return seconds(raw[key], key)
        except UnitError:
            self.fail(f"{path}.{key}" if path else key, "must be a duration like 60s or 500ms")
            return default

    def integer(self, raw: dict[str, Any], key: str, path: str, default: int, low: int = 0,
                high: int = 1 << 31) -> int:
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(f"{path}.{key}", f"must be an integer from {low} to {high}")
            return default
        return value

    def number(self, raw: dict[str, Any], key: str, path: str, default: float, low: float,
               high: float) -> float:
        value = raw.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or not (
                low <= value <= high):
            self.fail(f"{path}.{key}", f"must be a number from {low:g} to {high:g}")
            return default
        return float(value)


def parse(raw: Any, source: str) -> Drill:
    c = _Checker(source)
    top = c.mapping(raw, "", {"name", "description", "needs", "steady_state", "traffic",
                              "faults", "converge", "rollbacks"})
    if not isinstance(raw, dict):
        raise DrillError([f"{c.where}: a drill is a YAML mapping"])
    name = str(top.get("name") or Path(source).stem)
    description = str(top.get("description") or "")
    needs = c.mapping(top.get("needs"), "needs", {"backend", "regions", "network",
                                                  "link_proxy"})
    backend = needs.get("backend", "any")
    if backend not in ("any", "cluster", "embedded"):
        c.fail("needs.backend", "must be any, cluster or embedded")
    n_regions = c.integer(needs, "regions", "needs", 1, 1, 16)
    ss_raw = c.mapping(top.get("steady_state"), "steady_state",
                       {"max_lag_ms", "max_send_p99_ms", "probe_sends"})
    steady = SteadyState(c.integer(ss_raw, "max_lag_ms", "steady_state", 5000, 0, 3_600_000),
                         c.integer(ss_raw, "max_send_p99_ms", "steady_state", 2000, 1,
                                   3_600_000),
                         c.integer(ss_raw, "probe_sends", "steady_state", 20, 0, 1000))
    traffic = _traffic(c, top.get("traffic"))
    faults = _faults(c, top.get("faults"), traffic.duration)
    conv_raw = c.mapping(top.get("converge"), "converge", {"timeout"})
    converge = c.duration(conv_raw, "timeout", "converge", 120.0) or 120.0
    rollbacks = top.get("rollbacks", "heal")
    if rollbacks != "heal":
        c.fail("rollbacks", "the only rollback is 'heal' (every fault is healed at the end)")
    if c.problems:
        raise DrillError(c.problems)
    return Drill(name, description, source, steady, traffic, faults, converge, backend,
                 n_regions, bool(needs.get("network", False)),
                 bool(needs.get("link_proxy", False)), raw)


def _traffic(c: _Checker, raw: Any) -> Traffic:
    t = c.mapping(raw, "traffic", {"duration", "rate", "clients", "conversations",
                                   "body_bytes", "send_timeout"})
    if raw is None:
        c.fail("traffic", "is required")
    duration = c.duration(t, "duration", "traffic", None) or 0.0
    if duration and not 1 <= duration <= 3600:
        c.fail("traffic.duration", "must be from 1s to 1h")
    rate = c.number(t, "rate", "traffic", 20.0, 0.1, 5000.0)
    clients = c.integer(t, "clients", "traffic", 2, 1, 500)
    body = t.get("body_bytes", [20, 200])
    if (not isinstance(body, list) or len(body) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in body)
            or not 1 <= body[0] <= body[1] <= 16384):
        c.fail("traffic.body_bytes", "must be [min, max] bytes, 1 to 16384")
        body = [20, 200]
    timeout = c.duration(t, "send_timeout", "traffic", 5.0) or 5.0
    convs: list[Conversations] = []
    items = t.get("conversations", [{"kind": "direct", "count": 1, "home": "each"}])
    if not isinstance(items, list) or not items:
        c.fail("traffic.conversations", "must be a non-empty list")
        items = []
    for i, item in enumerate(items):
        path = f"traffic.conversations[{i}]"
        conv = c.mapping(item, path, {"kind", "count", "home", "size", "across"})
        kind = conv.get("kind", "direct")
        if kind not in CONV_KINDS:
            c.fail(f"{path}.kind", f"must be one of {', '.join(CONV_KINDS)}")
        size = 2 if kind == "direct" else c.integer(conv, "size", path, 4, 3, 100)
        across = conv.get("across", True)
        if not isinstance(across, bool):
            c.fail(f"{path}.across", "must be true or false")
        home = conv.get("home", "each")
        if not isinstance(home, str):
            c.fail(f"{path}.home", "must be 'each', a region name or {rN}")
            home = "each"
        convs.append(Conversations(kind, c.integer(conv, "count", path, 1, 1, 1000), home,
                                   size, bool(across)))
    return Traffic(duration, rate, clients, convs, (int(body[0]), int(body[1])), timeout)


def _faults(c: _Checker, raw: Any, traffic_duration: float) -> list[ScheduledFault]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.fail("faults", "must be a list of {at, fault, duration}")
        return []
    out: list[ScheduledFault] = []
    for i, item in enumerate(raw):
        path = f"faults[{i}]"
        entry = c.mapping(item, path, {"at", "fault", "duration"})
        at = c.duration(entry, "at", path, None) or 0.0
        if traffic_duration and at >= traffic_duration:
            c.fail(f"{path}.at", "must fall inside traffic.duration")
        fault = entry.get("fault")
        if not isinstance(fault, dict) or len(fault) != 1:
            c.fail(f"{path}.fault", f"must be one of: {', '.join(FAULT_KINDS)} "
                                    "(e.g. {partition: [\"{r0}\", \"{r1}\"]})")
            continue
        kind, value = next(iter(fault.items()))
        if kind not in FAULT_KINDS:
            c.fail(f"{path}.fault", f"unknown fault '{kind}'; one of {', '.join(FAULT_KINDS)}")
            continue
        args = _fault_args(c, f"{path}.fault.{kind}", kind, value)
        duration = None
        if kind in TIMED:
            duration = c.duration(entry, "duration", path, None)
        elif "duration" in entry:
            c.fail(f"{path}.duration", f"{kind} is instantaneous; it takes no duration")
        out.append(ScheduledFault(at, kind, args, duration))
    return out


def _fault_args(c: _Checker, path: str, kind: str, value: Any) -> dict[str, Any]:
    if kind in ("partition", "link"):
        if isinstance(value, list):
            value = {"regions": value}
        known = {"regions", "one_way"} if kind == "partition" else {
            "regions", "latency", "jitter", "bandwidth", "reset", "blackhole"}
        args = dict(c.mapping(value, path, known))
        regions = args.get("regions")
        if not (isinstance(regions, list) and len(regions) == 2
                and all(isinstance(r, str) for r in regions)):
            c.fail(f"{path}.regions", "must name two regions, e.g. [\"{r0}\", \"{r1}\"]")
        if kind == "link":
            for key in ("latency", "jitter"):
                if key in args:
                    try:
                        args[key] = seconds(args[key], key)
                    except UnitError:
                        c.fail(f"{path}.{key}", "must be a duration like 300ms")
            if "bandwidth" in args:
                try:
                    args["bandwidth"] = bytes_per_second(args["bandwidth"])
                except UnitError:
                    c.fail(f"{path}.bandwidth", "must be a rate like 256kbit")
        return args
    if kind == "isolate":
        if not isinstance(value, str):
            c.fail(path, "must name one region, e.g. \"{r1}\"")
        return {"region": value}
    if kind == "drop_clients":
        if value not in ("all",) and not isinstance(value, str):
            c.fail(path, "must be 'all' or a region")
        return {"region": value}
    if kind == "failover":  # `msgctl region failover FROM --to TO` (every conversation)
        args = dict(c.mapping(value, path, {"from", "to"}))
        if not all(isinstance(args.get(k), str) for k in ("from", "to")):
            c.fail(path, "must name the regions, e.g. {from: \"{r0}\", to: \"{r1}\"}")
            return {}
        return {"regions": [args["from"], args["to"]]}
    if kind == "failback":  # once reconciled: `msgctl region failback REGION`
        if not isinstance(value, str):
            c.fail(path, "must name one region, e.g. \"{r0}\"")
        return {"region": value}
    # process faults and restart: a glob, or {glob, signal, select, seed}
    if isinstance(value, str):
        value = {"glob": value}
    known = {"glob", "select", "seed"} | ({"signal"} if kind == "kill" else set())
    args = dict(c.mapping(value, path, known))
    if not isinstance(args.get("glob"), str) or not args.get("glob"):
        c.fail(f"{path}.glob", "must be a glob on programs, e.g. 'sequencer.*'")
    if args.get("select", "all") not in select.MODES:
        c.fail(f"{path}.select", f"must be one of {', '.join(select.MODES)}")
    if "signal" in args:
        try:
            signal_number(args["signal"])
        except ValueError as exc:
            c.fail(f"{path}.signal", str(exc))
    if kind not in PROCESS and kind != "restart":
        c.fail(path, f"unknown fault '{kind}'")
    return args
