"""Topology files (regions/*.yaml): load, validate, and turn into supervised programs.

A topology names the regions, their addresses and ports, the backend family
and the tunables of the runtimes. `plan` turns it into the programs the
supervisor runs, in dependency order, with one node config file each.
Embedded: one node per region hosting the four runtimes. Cluster: per region
the engines msgctl provisions (Kafka, Cassandra, Redis, and S3Proxy for media
when the region has an `s3` engine; none when external), then one process per
runtime and N gateway processes (gateway-N serves media on the gateway port + 20 + N-1).
With several regions and ``chaos.link_proxy`` on, each region also gets a
Toxiproxy (``toxiproxy.<region>``) that carries its connections to the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgctl import yamltext
from msgctl.errors import UsageError
from msgctl.infra import programs as engine_programs
from msgctl.infra import toxiproxy
from msgctl.infra.catalog import CASSANDRA, KAFKA
from msgctl.infra.spec import EngineSpec, parse_engines
from msgctl.supervisor.program import Program
from runtime.config import (
    ApnsConfig,
    FcmConfig,
    LimitsConfig,
    MediaConfig,
    NodeConfig,
    PresenceConfig,
    PushConfig,
)
from runtime.core import media as media_rules

__all__ = ["Program", "Region", "Topology", "load", "parse", "plan"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = "regions/local.yaml"
BACKENDS = ("embedded", "cluster")
RUNTIMES = ("sequencer", "presence", "push", "gateway")  # start order
# cluster: the single-runtime processes listen beside the gateways (base + 10, 11, 12)
RUNTIME_PORT_OFFSETS = {"sequencer": 10, "presence": 11, "push": 12}
MAX_GATEWAY_PROCESSES = 8  # they take base .. base+N-1, below the runtimes at base+10
# the blob endpoint's default port is the gateway's + 20 (cluster: gateway-N's is + 20 + N-1)
MEDIA_PORT_OFFSET = 20
LINK_PROXY_MODES = ("auto", "on", "off")
DEFAULT_PROXY_PORT = 8474  # Toxiproxy's own default API port


@dataclass(frozen=True)
class ChaosSettings:
    """The topology's ``chaos:`` section.

    ``link_proxy``: ``auto`` (inter-region connections go through a Toxiproxy per
    region when this machine can redirect them: root, iptables, cgroup v2, Go),
    ``on`` (the same, and an error when it cannot), ``off`` (direct).
    ``proxy_port``: each region's Toxiproxy API on the region's host; its proxies
    listen on the ports just above it.
    """

    link_proxy: str = "auto"
    proxy_port: int = DEFAULT_PROXY_PORT


@dataclass(frozen=True)
class Region:
    name: str
    host: str
    gateway_port: int
    gateway_processes: int = 1
    engines: dict[str, EngineSpec] = field(default_factory=dict, hash=False, compare=False)
    media_port: int = 0  # the blob endpoint (cluster: of gateway-1, then +1 each); 0 = none

    @property
    def media_url(self) -> str:
        return f"http://{self.host}:{self.media_port}" if self.media_port else ""

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.gateway_port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    def ports(self) -> list[tuple[int, str]]:
        """Every port this region's programs listen on, with what listens there."""
        out = [(self.gateway_port + i, f"gateway-{i + 1}" if self.engines else "gateway")
               for i in range(self.gateway_processes)]
        if self.engines:
            out += [(self.gateway_port + off, rt) for rt, off in RUNTIME_PORT_OFFSETS.items()]
            for spec in engine_programs.provisioned(self.engines):
                out += [(port, spec.engine if key == "port" else
                         f"{spec.engine} {key.removesuffix('_port')}")
                        for key, port in spec.ports.items()]
        if self.media_port and self.engines:
            out += [(self.media_port + i, f"media gateway-{i + 1}")
                    for i in range(self.gateway_processes)]
        elif self.media_port:
            out.append((self.media_port, "media"))
        return out


@dataclass
class Topology:
    name: str
    backend: str
    regions: list[Region]
    source: str
    limits: dict[str, Any] = field(default_factory=dict)
    presence: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    chaos: ChaosSettings = field(default_factory=ChaosSettings)

    @property
    def multi_region_cluster(self) -> bool:
        return self.backend == "cluster" and len(self.regions) > 1



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
    media_raw = raw.get("media")
    media = _media_section({} if media_raw is None else media_raw, where)
    if media.get("port") and len(regions_raw) > 1:
        raise UsageError(f"{where}: media.port is per region; leave it out with several "
                         "regions (each uses its gateway port + 20)")
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
        processes = gateway.get("processes", 1)
        if not isinstance(processes, int) or isinstance(processes, bool) or not (
                1 <= processes <= MAX_GATEWAY_PROCESSES):
            raise UsageError(f"{rw}.gateway.processes must be an integer from 1 to "
                             f"{MAX_GATEWAY_PROCESSES}")
        if processes > 1 and backend != "cluster":
            raise UsageError(f"{rw}.gateway.processes: more than one gateway process needs "
                             "backend: cluster")
        engines: dict[str, EngineSpec] = {}
        if backend == "cluster":
            engines = parse_engines(r.get("engines"), rw, port_offset)
        elif "engines" in r:
            raise UsageError(f"{rw}: 'engines' needs backend: cluster")
        media_port = 0
        if media.get("enabled", True) and (backend == "embedded" or "s3" in engines):
            media_port = (media["port"] + port_offset if media.get("port")
                          else port + MEDIA_PORT_OFFSET)
        region = Region(name, host, port, processes, engines, media_port)
        seen: dict[int, str] = {}
        for p, what in region.ports():
            if not 1 <= p <= 65535:
                raise UsageError(f"{rw}: {what} port {p} is out of range 1-65535")
            if p in seen:
                raise UsageError(f"{rw}: {what} and {seen[p]} both use port {p}")
            seen[p] = what
        regions.append(region)
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: region names must be unique")
    storage = {r.engines[CASSANDRA].ports["storage_port"] for r in regions
               if CASSANDRA in r.engines and r.engines[CASSANDRA].provisioned}
    if len(storage) > 1:
        raise UsageError(f"{where}: the regions' Cassandra nodes form one cluster and must use "
                         "the same storage_port (each on its region's host)")
    jmx = [r.engines[CASSANDRA].ports["jmx_port"] for r in regions
           if CASSANDRA in r.engines and r.engines[CASSANDRA].provisioned]
    if len(set(jmx)) != len(jmx):
        raise UsageError(f"{where}: each region's Cassandra needs its own jmx_port (JMX "
                         "listens on localhost, whatever the region's host)")
    endpoints = [(r.host, p) for r in regions for p, _ in r.ports()]
    if len(set(endpoints)) != len(endpoints):
        raise UsageError(f"{where}: two regions share a host and port")
    chaos = _chaos_section(raw.get("chaos"), where, port_offset)
    for region, proxies in link_proxies(backend, regions, chaos).items():
        taken = {p: what for p, what in region_by_name(regions, region).ports()}
        for port in [chaos.proxy_port, *(p.listen_port for p in proxies)]:
            if port in taken or not 1 <= port <= 65535:
                clash = f"{taken[port]} uses it" if port in taken else "out of range"
                raise UsageError(f"{where}: chaos.proxy_port: the link proxy of {region} needs "
                                 f"port {port} ({clash}); choose another proxy_port")
    limits = _known_keys(raw.get("limits") or {}, LimitsConfig, f"{where}: limits")
    presence = _known_keys(raw.get("presence") or {}, PresenceConfig, f"{where}: presence")
    push = _push_settings(raw.get("push") or {}, Path(source).parent, where)
    return Topology(str(raw.get("name", Path(source).stem)), backend, regions, source,
                    limits, presence, push, media, chaos)


def region_by_name(regions: list[Region], name: str) -> Region:
    return next(r for r in regions if r.name == name)


def _chaos_section(raw: Any, where: str, port_offset: int) -> ChaosSettings:
    if raw is None:
        return ChaosSettings(proxy_port=DEFAULT_PROXY_PORT + port_offset)
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: chaos must be a mapping")
    unknown = set(raw) - {"link_proxy", "proxy_port"}
    if unknown:
        raise UsageError(f"{where}: chaos: unknown setting(s) {', '.join(sorted(unknown))}; "
                         "known: link_proxy, proxy_port")
    mode = raw.get("link_proxy", "auto")
    if mode is True or mode is False:  # YAML reads a bare on/off as a boolean
        mode = "on" if mode else "off"
    if mode not in LINK_PROXY_MODES:
        raise UsageError(f"{where}: chaos.link_proxy must be one of "
                         f"{', '.join(LINK_PROXY_MODES)}")
    port = raw.get("proxy_port", DEFAULT_PROXY_PORT)
    if not isinstance(port, int) or isinstance(port, bool):
        raise UsageError(f"{where}: chaos.proxy_port must be an integer port")
    port += port_offset
    if not 1 <= port <= 65535:
        raise UsageError(f"{where}: chaos.proxy_port {port} is out of range 1-65535")
    return ChaosSettings(mode, port)


def link_proxies(backend: str, regions: list[Region], chaos: ChaosSettings,
                 ) -> dict[str, list[toxiproxy.LinkProxy]]:
    """Per region, the proxies its Toxiproxy would run: one per peer port its programs
    open connections to (empty unless several cluster regions and link_proxy not off)."""
    if backend != "cluster" or len(regions) < 2 or chaos.link_proxy == "off":
        return {}
    out: dict[str, list[toxiproxy.LinkProxy]] = {}
    for region in regions:
        proxies: list[toxiproxy.LinkProxy] = []
        for peer in regions:
            if peer is region:
                continue
            for engine, key in toxiproxy.CROSSING:
                spec = peer.engines.get(engine)
                if spec is None or not spec.provisioned:
                    continue
                proxies.append(toxiproxy.LinkProxy(
                    f"{peer.name}-{engine}", region.name, peer.name, engine, region.host,
                    chaos.proxy_port + 1 + len(proxies), peer.host, spec.ports[key]))
        out[region.name] = proxies
    return out


def _media_section(raw: Any, where: str) -> dict[str, Any]:
    """The `media:` section, checked: ports, ceilings per kind, content-type allow-lists."""
    w = f"{where}: media"
    if not isinstance(raw, dict):
        raise UsageError(f"{w} must be a mapping")
    media = _known_keys(dict(raw), MediaConfig, w)
    for key in ("port", "upload_ttl_s", "url_ttl_s"):
        value = media.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0 or key == "port" and value > 65535):
            raise UsageError(f"{w}.{key} must be a non-negative integer")
    kinds = media_rules.UPLOAD_KINDS
    checks = {"max_bytes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                            "a positive number of bytes"),
              "content_types": (lambda v: isinstance(v, list) and bool(v) and all(
                  isinstance(c, str) and "/" in c for c in v),
                                "a list of content types like image/png")}
    for section, (check, what) in checks.items():
        value = media.get(section, {})
        if not isinstance(value, dict):
            raise UsageError(f"{w}.{section} must map a kind ({', '.join(kinds)}) to a value")
        for kind, v in value.items():
            if kind not in kinds:
                raise UsageError(f"{w}.{section}: unknown kind '{kind}'; use {', '.join(kinds)}")
            if not check(v):
                raise UsageError(f"{w}.{section}.{kind} must be {what}")
    return media


def _push_settings(raw: Any, base: Path, where: str) -> dict[str, Any]:
    """The `push:` section, checked; credential paths made absolute (relative to the file)."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: 'push' must be a mapping")
    out = dict(_known_keys(raw, PushConfig, f"{where}: push"))
    for name, cls, path_key in (("fcm", FcmConfig, "service_account"),
                                ("apns", ApnsConfig, "key_file")):
        section = out.get(name)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise UsageError(f"{where}: push.{name} must be a mapping")
        section = dict(_known_keys(section, cls, f"{where}: push.{name}"))
        if section.get(path_key):
            path = Path(str(section[path_key])).expanduser()
            path = path if path.is_absolute() else (base / path).resolve()
            if not path.is_file():
                raise UsageError(f"{where}: push.{name}.{path_key}: no such file {path}")
            section[path_key] = str(path)
        out[name] = section
    try:
        PushConfig(**out)
    except TypeError as exc:
        raise UsageError(f"{where}: push: {exc}") from None
    if out.get("fcm", {}).get("service_account"):
        try:
            sa = json.loads(Path(out["fcm"]["service_account"]).read_text())
            missing = [k for k in ("project_id", "client_email", "private_key") if not sa.get(k)]
        except (OSError, ValueError, AttributeError):
            missing = ["a JSON object"]
        if missing:
            raise UsageError(f"{where}: push.fcm.service_account is not a service account key "
                             f"file (needs {', '.join(missing)})")
    if "apns" in out and out["apns"].get("key_file"):
        missing = [k for k in ("key_id", "team_id", "topic") if not out["apns"].get(k)]
        if missing:
            raise UsageError(f"{where}: push.apns needs {', '.join(missing)} with key_file")
    return out


def load(spec: str | Path, port_offset: int = 0) -> Topology:
    path = resolve_path(spec)
    try:
        raw = yamltext.safe_load(path.read_text())
    except yamltext.YamlSyntaxError as exc:
        raise UsageError(f"{path.name}: {exc}") from None
    return parse(raw, str(path), port_offset)


def node_config(topo: Topology, region: Region, home_dirs: dict[str, Path],
                secret: str, **overrides: Any) -> NodeConfig:
    try:
        limits = LimitsConfig(**topo.limits)
        presence = PresenceConfig(**topo.presence)
    except TypeError as exc:
        raise UsageError(f"{Path(topo.source).name}: {exc}") from None
    settings: dict[str, Any] = dict(
        region=region.name, host=region.host, port=region.gateway_port,
        data_dir=str(home_dirs["data"]), log_dir=str(home_dirs["logs"]), secret=secret,
        limits=limits, presence=presence, push=PushConfig(**topo.push),
        media=MediaConfig(**(topo.media | {"port": region.media_port})))
    return NodeConfig(**(settings | overrides))


def _write_config(config_dir: Path, name: str, cfg: NodeConfig) -> Path:
    path = config_dir / f"{name}.json"
    path.write_text(cfg.to_json())
    path.chmod(0o600)  # it holds the JWT secret
    return path


def plan_engines(topo: Topology, home_root: Path,
                 proxy_binary: Path | None = None) -> list[Program]:
    """The provisioned engines of every region (external ones have no program).

    Several regions: one Cassandra cluster (the first region's node is the seed, the
    others join it one after the other, each a data center of its own) and a
    MirrorMaker 2 per region once every Kafka runs. With `proxy_binary`, first a
    Toxiproxy per region, which that region's Cassandra and mirror wait for.
    """
    out: list[Program] = []
    proxies = link_proxies(topo.backend, topo.regions, topo.chaos) if proxy_binary else {}
    for region in topo.regions:
        if region.name in proxies:
            out.append(engine_programs.proxy_program(
                region.name, region.host, topo.chaos.proxy_port, proxies[region.name],
                proxy_binary, home_root))  # type: ignore[arg-type]
    seed: Region | None = None
    joined: list[str] = []  # Cassandra programs so far, in join order
    for region in topo.regions:
        for spec in engine_programs.provisioned(region.engines):
            if spec.engine == CASSANDRA:
                program = engine_programs.engine_program(
                    spec, region.name, region.host, home_root,
                    seed=seed.host if seed else None, peers=len(joined))
                program.depends_on = joined[-1:] + (
                    [f"toxiproxy.{region.name}"] if region.name in proxies else [])
                joined.append(program.name)
                seed = seed or region
            else:
                program = engine_programs.engine_program(spec, region.name, region.host,
                                                         home_root)
            out.append(program)
    kafkas = {r.name: (r, r.engines[KAFKA]) for r in topo.regions if KAFKA in r.engines}
    if len(topo.regions) > 1 and all(spec.provisioned for _, spec in kafkas.values()):
        clusters = {name: engine_programs.engine_endpoint(spec, r.host)
                    for name, (r, spec) in kafkas.items()}
        kafka_programs = [p.name for p in out if p.runtimes == [KAFKA]]
        for name, (r, spec) in kafkas.items():
            out.append(engine_programs.mirror_program(
                name, r.host, clusters, spec, home_root,
                kafka_programs + ([f"toxiproxy.{name}"] if name in proxies else [])))
    return out


def peers_of(topo: Topology, region: Region) -> dict[str, tuple[str, dict[str, Any]]]:
    return {r.name: (r.host, r.engines) for r in topo.regions if r.name != region.name}


def _plan_cluster(topo: Topology, region: Region, python: str, config_dir: Path,
                  home_dirs: dict[str, Path], secret: str,
                  engines: list[Program], home_root: Path) -> list[Program]:
    """One process per runtime, then the gateways; each waits for the one before it."""
    engines_cfg = engine_programs.engines_config(region.engines, region.name, region.host,
                                                 home_root=home_root,
                                                 peers=peers_of(topo, region))
    http = f"http://{region.host}"
    out: list[Program] = []
    # every data center must exist before the keyspace names it, and one sequencer (the
    # first region's) applies the schema before the others use it
    previous = [p.name for p in engines if p.runtimes != ["mirror"]
                and (p.runtimes != ["toxiproxy"] or p.region == region.name)]
    first = topo.regions[0]
    if region is not first:
        previous.append(f"sequencer.{first.name}")
    units = [(rt, [rt], region.gateway_port + off, "gateway", 0)  # gateway_id unused there
             for rt, off in RUNTIME_PORT_OFFSETS.items()]
    units += [(f"gateway-{i + 1}", ["gateway"], region.gateway_port + i, f"gateway-{i + 1}",
               region.media_port + i if region.media_port else 0)
              for i in range(region.gateway_processes)]
    for unit, runtimes, port, gateway_id, media_port in units:
        name = f"{unit}.{region.name}"
        cfg = node_config(topo, region, home_dirs, secret, port=port, runtimes=runtimes,
                          gateway_id=gateway_id, backend="cluster", engines=engines_cfg,
                          media=MediaConfig(**(topo.media | {"port": media_port})),
                          schema_owner=region is first)
        path = _write_config(config_dir, name, cfg)
        is_gateway = runtimes == ["gateway"]
        out.append(Program(
            name=name, region=region.name, runtimes=runtimes,
            argv=[python, "-m", "runtime.node", "--config", str(path)],
            health_url=f"{http}:{port}/readyz",
            endpoint=f"ws://{region.host}:{port}/v1/ws" if is_gateway else f"{http}:{port}",
            depends_on=list(previous)))
        if not is_gateway:
            previous = [name]  # the gateways, last, start side by side
    return out


def plan(topo: Topology, python: str, config_dir: Path, home_dirs: dict[str, Path],
         secret: str, home_root: Path | None = None,
         proxy_binary: Path | None = None) -> list[Program]:
    """Programs to supervise, in start order.

    Embedded: one node per region hosting all four runtimes. Cluster: the
    provisioned engines (which need the engine cache, see `msgctl infra fetch`),
    then sequencer, presence, push and the gateway processes of each region.
    """
    programs: list[Program] = []
    config_dir.mkdir(parents=True, exist_ok=True)
    if topo.backend == "cluster":
        root = home_root or config_dir.parent
        engines = plan_engines(topo, root, proxy_binary)
        programs += engines
        for region in topo.regions:
            programs += _plan_cluster(topo, region, python, config_dir, home_dirs, secret,
                                      engines, root)
        return programs
    for region in topo.regions:
        cfg = node_config(topo, region, home_dirs, secret)
        cfg_path = _write_config(config_dir, f"node.{region.name}", cfg)
        programs.append(Program(
            name=f"node.{region.name}", region=region.name, runtimes=list(RUNTIMES),
            argv=[python, "-m", "runtime.node", "--config", str(cfg_path)],
            health_url=f"{region.http_url}/readyz", endpoint=region.ws_url))
    return programs


def to_json(topo: Topology) -> str:
    regions = []
    for r in topo.regions:
        entry: dict[str, Any] = {"name": r.name, "host": r.host, "gateway_port": r.gateway_port,
                                 "ws_url": r.ws_url}
        if topo.backend == "cluster":
            entry["gateway_urls"] = [f"ws://{r.host}:{r.gateway_port + i}/v1/ws"
                                     for i in range(r.gateway_processes)]
            entry["engines"] = {e: engine_programs.engine_endpoint(s, r.host)
                                for e, s in r.engines.items()}
        regions.append(entry)
    return json.dumps({"name": topo.name, "backend": topo.backend, "source": topo.source,
                       "regions": regions}, indent=2)
