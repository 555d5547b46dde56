"""Topology files (regions/*.yaml): load, validate, and turn into supervised programs.

A topology names the regions, their addresses and ports, the backend family
and the tunables of the runtimes. `plan` turns it into the programs the
supervisor runs, in dependency order, with one node config file each.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from msgctl.errors import UsageError
from runtime.config import LimitsConfig, NodeConfig, PresenceConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = "regions/local.yaml"
BACKENDS = ("embedded",)
RUNTIMES = ("sequencer", "presence", "push", "gateway")  # start order


@dataclass(frozen=True)
class Region:
    name: str
    host: str
    gateway_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.gateway_port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"


@dataclass
class Topology:
    name: str
    backend: str
    regions: list[Region]
    source: str
    limits: dict[str, Any] = field(default_factory=dict)
    presence: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)


@dataclass
class Program:
    """One supervised process and the runtimes it hosts."""

    name: str
    region: str
    runtimes: list[str]
    argv: list[str]
    health_url: str
    endpoint: str
    depends_on: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Program:
        return cls(**raw)


def resolve_path(spec: str | Path) -> Path:
    """A topology path as given, else relative to the project (so `up` works from anywhere)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve()
    alt = PROJECT_ROOT / path
    if not path.is_absolute() and alt.is_file():
        return alt
    raise UsageError(f"topology file not found: {spec}")


def _require(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise UsageError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def _known_keys(raw: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    return raw


def parse(raw: Any, source: str, port_offset: int = 0) -> Topology:
    where = Path(source).name
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: a topology is a YAML mapping")
    backend = raw.get("backend", "embedded")
    if backend not in BACKENDS:
        raise UsageError(f"{where}: backend '{backend}' is not supported here; "
                         f"use one of: {', '.join(BACKENDS)}")
    regions_raw = raw.get("regions")
    if not isinstance(regions_raw, list) or not regions_raw:
        raise UsageError(f"{where}: 'regions' must be a non-empty list")
    regions: list[Region] = []
    for i, r in enumerate(regions_raw):
        rw = f"{where}: regions[{i}]"
        if not isinstance(r, dict):
            raise UsageError(f"{rw} must be a mapping")
        name = _require(r, "name", str, rw)
        host = _require(r, "host", str, rw)
        gateway = r.get("gateway") or {}
        if not isinstance(gateway, dict):
            raise UsageError(f"{rw}: 'gateway' must be a mapping")
        port = _require(gateway, "port", int, f"{rw}.gateway") + port_offset
        if not 1 <= port <= 65535:
            raise UsageError(f"{rw}: gateway port {port} is out of range 1-65535")
        regions.append(Region(name, host, port))
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: region names must be unique")
    endpoints = [(r.host, r.gateway_port) for r in regions]
    if len(set(endpoints)) != len(endpoints):
        raise UsageError(f"{where}: two regions share a host and port")
    limits = _known_keys(raw.get("limits") or {}, LimitsConfig, f"{where}: limits")
    presence = _known_keys(raw.get("presence") or {}, PresenceConfig, f"{where}: presence")
    push = raw.get("push") or {}
    return Topology(str(raw.get("name", Path(source).stem)), backend, regions, source,
                    limits, presence, push)


def load(spec: str | Path, port_offset: int = 0) -> Topology:
    path = resolve_path(spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path.name}: not valid YAML{at}") from None
    return parse(raw, str(path), port_offset)


def node_config(topo: Topology, region: Region, home_dirs: dict[str, Path],
                secret: str) -> NodeConfig:
    try:
        limits = LimitsConfig(**topo.limits)
        presence = PresenceConfig(**topo.presence)
    except TypeError as exc:
        raise UsageError(f"{Path(topo.source).name}: {exc}") from None
    return NodeConfig(region=region.name, host=region.host, port=region.gateway_port,
                      data_dir=str(home_dirs["data"]), log_dir=str(home_dirs["logs"]),
                      secret=secret, limits=limits, presence=presence,
                      push_hide_body=bool(topo.push.get("hide_body", False)))


def plan(topo: Topology, python: str, config_dir: Path, home_dirs: dict[str, Path],
         secret: str) -> list[Program]:
    """Programs to supervise. Embedded: one node per region hosting all four runtimes."""
    programs: list[Program] = []
    config_dir.mkdir(parents=True, exist_ok=True)
    for region in topo.regions:
        cfg = node_config(topo, region, home_dirs, secret)
        cfg_path = config_dir / f"node.{region.name}.json"
        cfg_path.write_text(cfg.to_json())
        cfg_path.chmod(0o600)  # it holds the JWT secret
        programs.append(Program(
            name=f"node.{region.name}", region=region.name, runtimes=list(RUNTIMES),
            argv=[python, "-m", "runtime.node", "--config", str(cfg_path)],
            health_url=f"{region.http_url}/readyz", endpoint=region.ws_url))
    return programs


def to_json(topo: Topology) -> str:
    return json.dumps({"name": topo.name, "backend": topo.backend, "source": topo.source,
                       "regions": [asdict(r) | {"ws_url": r.ws_url} for r in topo.regions]},
                      indent=2)
