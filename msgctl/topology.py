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

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgctl import keyring_file, tls, yamltext
from msgctl.errors import UsageError
from msgctl.home import write_private
from msgctl.infra import programs as engine_programs
from msgctl.infra import security, toxiproxy
from msgctl.infra.catalog import CASSANDRA, KAFKA
from msgctl.infra.spec import EngineSpec, parse_engines
from msgctl.supervisor.program import Program
from runtime import keyring as keyring_mod
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
# the CPU priority (nice) of the cluster's gateway and sequencer processes: their single
# event loops are the message path, and on a small host they wait for a core behind the
# engines' many threads (msgctl.supervisor.priority). Cassandra's too: every store write
# waits for its commit log's group sync thread, and all of them for its young
# collections, which stretched while their threads waited behind those event loops.
# Only for a region alone on its host: where regions share one, the cross-region path
# runs through MirrorMaker 2 and the other region's engines too, and favouring the event
# loops made it slower (docs/cluster.md).
PATH_NICE = -5
MAX_GATEWAY_PROCESSES = 8  # they take base .. base+N-1, below the runtimes at base+10
# the blob endpoint's default port is the gateway's + 20 (cluster: gateway-N's is + 20 + N-1)
MEDIA_PORT_OFFSET = 20
LINK_PROXY_MODES = ("auto", "on", "off")
DEFAULT_PROXY_PORT = 8474  # Toxiproxy's own default API port
REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
HOST = re.compile(r"[A-Za-z0-9._:-]{1,253}")  # a name, an IPv4 or an IPv6 address
TOPOLOGY_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,60}")
MAX_SETTING = 2**62  # far above any sensible limit or time


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
class TlsSettings:
    """The topology's `tls:` section: TLS on the gateways' WebSocket ports and the media
    endpoints (on unless `enabled: false`, e.g. behind a proxy that terminates TLS).

    ``ca``: a directory holding ``ca.pem`` and ``ca.key`` to sign the endpoints'
    certificates with (made there if missing); default the home's ``tls/``.
    ``cert`` and ``key``: a certificate chain and key the operator supplies, served
    instead (clients then trust whatever signed it).
    """

    enabled: bool = True
    ca: str = ""
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class EncryptionSettings:
    """The topology's `encryption:` section: message bodies, media metadata and blobs
    sealed with AES-256-GCM at the gateway (on unless `enabled: false`), under the keys of
    the home's `keys/keyring.json` (`msgctl keys`)."""

    enabled: bool = True


@dataclass(frozen=True)
class Region:
    name: str
    host: str
    gateway_port: int
    gateway_processes: int = 1
    engines: dict[str, EngineSpec] = field(default_factory=dict, hash=False, compare=False)
    media_port: int = 0  # the blob endpoint (cluster: of gateway-1, then +1 each); 0 = none
    tls: bool = field(default=False, compare=False)  # wss:// and https:// (topology `tls:`)
    agent: str = field(default="", compare=False)  # HOST:PORT of its gRPC agent; "" = none

    @property
    def agent_port(self) -> int:
        return int(self.agent.rsplit(":", 1)[1]) if self.agent else 0

    @property
    def media_url(self) -> str:
        return f"{self.http_scheme}://{self.host}:{self.media_port}" if self.media_port else ""

    @property
    def http_scheme(self) -> str:
        return "https" if self.tls else "http"

    def gateway_ws_url(self, i: int = 0) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.gateway_port + i}/v1/ws"

    @property
    def ws_url(self) -> str:
        return self.gateway_ws_url(0)

    @property
    def http_url(self) -> str:
        return f"{self.http_scheme}://{self.host}:{self.gateway_port}"

    def tls_names(self) -> list[str]:
        """The names clients reach this region's gateways by (a certificate's SANs)."""
        names = [self.host]
        if self.host.startswith("127.") or self.host in ("0.0.0.0", "::", "::1", "localhost"):
            names += ["localhost", "127.0.0.1", "::1"]
        return sorted(set(names) - {"0.0.0.0", "::"})

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
        if self.agent and self.agent.rsplit(":", 1)[0] in (self.host, "0.0.0.0"):
            out.append((self.agent_port, "agent"))
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
    tls: TlsSettings = field(default_factory=TlsSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)

    @property
    def multi_region_cluster(self) -> bool:
        return self.backend == "cluster" and len(self.regions) > 1



def _shown(value: Any) -> str:
    """A value as a message shows it: quoted, and cut short (a topology may hold anything)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_number(value: Any, what: str, *, integer: bool, zero: bool = False) -> None:
    """`UsageError` unless `value` is a finite number above 0 (or 0 with `zero`), and an
    integer when `integer`; `what` starts the message."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and (isinstance(value, int) or not integer)
          # NaN fails both comparisons; the bound keeps it an int64 and a float
          and (value >= 0 if zero else value > 0) and value <= MAX_SETTING)
    if not ok:
        kind = "non-negative" if zero else "positive"
        also = "an integer; " if integer else ""
        raise UsageError(f"{what} must be a {kind} number ({also}got {_shown(value)})")


def resolve_path(spec: str | Path) -> Path:
    """A topology path as given, else relative to the project (so `up` works from anywhere)."""
    try:
        path = Path(spec).expanduser()
    except RuntimeError:  # `~user/...` of no such user
        raise UsageError(f"topology file not found: {spec}") from None
    if path.is_file():
        return path.resolve()
    alt = PROJECT_ROOT / path
    if not path.is_absolute() and alt.is_file():
        return alt
    raise UsageError(f"topology file not found: {spec}")


def _require(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        what = {str: "a string", int: "an integer"}.get(kind, f"a {kind.__name__}")
        raise UsageError(f"{where}: '{key}' must be {what}")
    return value


def _known_keys(raw: Any, cls: type, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping")
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {yamltext.listing(unknown)}; "
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
    tls = _tls_section(raw.get("tls"), Path(source).parent, where)
    encryption = _encryption_section(raw.get("encryption"), where)
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
        if not REGION_NAME.fullmatch(name):
            # it names files, programs, Kafka topics, a Cassandra data center, certificates
            raise UsageError(f"{rw}: name {_shown(name)} must be 1-40 letters, digits, '-' "
                             "or '_', starting with a letter or digit")
        host = _require(r, "host", str, rw)
        if not HOST.fullmatch(host):
            raise UsageError(f"{rw}: host {_shown(host)} is not a host name or IP address")
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
        agent = _agent_address(r.get("agent"), host, port_offset, rw)
        region = Region(name, host, port, processes, engines, media_port, tls.enabled, agent)
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
    if any(r.agent for r in regions) and not all(r.agent for r in regions):
        # with agents every verb goes through them: a region without one could not be run
        raise UsageError(f"{where}: every region names an 'agent:' or none does (missing: "
                         f"{', '.join(r.name for r in regions if not r.agent)})")
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
    defaults = LimitsConfig()
    for key, value in limits.items():
        # every limit is a positive number: 0, a string or a fraction of a count (a burst
        # of 0.5 frames) would fail each connection later
        _check_number(value, f"{where}: limits.{key}:",
                      integer=isinstance(getattr(defaults, key), int))
    presence = _known_keys(raw.get("presence") or {}, PresenceConfig, f"{where}: presence")
    for key, value in presence.items():  # the heartbeat paces a loop: never 0
        _check_number(value, f"{where}: presence.{key}:", integer=True,
                      zero=key == "grace_ms")
    push = _push_settings(raw.get("push") or {}, Path(source).parent, where)
    name = raw.get("name", Path(source).stem)
    if isinstance(name, bool) or not isinstance(name, str | int) or not (
            TOPOLOGY_NAME.fullmatch(str(name))):
        # it goes into the CA's certificate, whose name holds at most 64 characters
        raise UsageError(f"{where}: name {_shown(name)} must be 1-60 printable characters "
                         "on one line")
    return Topology(str(name), backend, regions, source,
                    limits, presence, push, media, chaos, tls, encryption)


def _agent_address(raw: Any, host: str, port_offset: int, where: str) -> str:
    """A region's `agent:` (HOST:PORT, or a PORT on the region's host) as HOST:PORT."""
    if raw is None:
        return ""
    agent_host, port_text = host, str(raw)
    if isinstance(raw, str) and ":" in raw:
        agent_host, port_text = raw.rsplit(":", 1)
    if (isinstance(raw, bool) or not isinstance(raw, str | int) or not port_text.isdigit()
            or not HOST.fullmatch(agent_host)):
        raise UsageError(f"{where}: agent {_shown(raw)} must be HOST:PORT or a port")
    port = int(port_text) + port_offset
    if not 1 <= port <= 65535:
        raise UsageError(f"{where}: agent port {port} is out of range 1-65535")
    return f"{agent_host}:{port}"


def region_by_name(regions: list[Region], name: str) -> Region:
    return next(r for r in regions if r.name == name)


def _switched(raw: Any, cls: type, name: str, where: str) -> dict[str, Any]:
    """The settings of a section that is on unless turned off (left out, `name: off`, or
    `enabled: false`), with `enabled` checked."""
    if raw is None or isinstance(raw, bool):
        return {"enabled": raw is not False}
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: {name} must be a mapping "
                         f"({', '.join(cls.__dataclass_fields__)})")
    out = dict(_known_keys(raw, cls, f"{where}: {name}"))
    out.setdefault("enabled", True)
    if not isinstance(out["enabled"], bool):
        raise UsageError(f"{where}: {name}.enabled must be true or false")
    return out


def _encryption_section(raw: Any, where: str) -> EncryptionSettings:
    return EncryptionSettings(_switched(raw, EncryptionSettings, "encryption", where)["enabled"])


def keyring_path(home_root: Path) -> Path:
    return home_root / "keys" / "keyring.json"


def _tls_section(raw: Any, base: Path, where: str) -> TlsSettings:
    raw = _switched(raw, TlsSettings, "tls", where)
    enabled = raw["enabled"]
    paths: dict[str, str] = {}
    for key in ("ca", "cert", "key"):
        value = raw.get(key) or ""
        if not isinstance(value, str):
            raise UsageError(f"{where}: tls.{key} must be a path")
        if value:
            paths[key] = str(_setting_path(value, base, f"{where}: tls.{key}"))
    if bool(paths.get("cert")) != bool(paths.get("key")):
        raise UsageError(f"{where}: tls.cert and tls.key go together")
    for key in ("cert", "key"):
        if paths.get(key) and not Path(paths[key]).is_file():
            raise UsageError(f"{where}: tls.{key}: no such file {paths[key]}")
    return TlsSettings(enabled, paths.get("ca", ""), paths.get("cert", ""),
                       paths.get("key", ""))


def _setting_path(value: str, base: Path, what: str) -> Path:
    """A file or directory a setting names, made absolute (a relative one is relative to
    the topology file)."""
    try:
        if "\0" in value:  # the OS takes no path with a NUL; pathlib says so only later
            raise ValueError("a NUL character")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    except RuntimeError:  # `~user/...` of no such user
        raise UsageError(f"{what}: {value!r}: no such user's home directory") from None
    except ValueError as exc:
        raise UsageError(f"{what}: {value!r} is not a usable path ({exc})") from None


def _chaos_section(raw: Any, where: str, port_offset: int) -> ChaosSettings:
    if raw is None:
        return ChaosSettings(proxy_port=DEFAULT_PROXY_PORT + port_offset)
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: chaos must be a mapping")
    unknown = set(raw) - {"link_proxy", "proxy_port"}
    if unknown:
        raise UsageError(f"{where}: chaos: unknown setting(s) {yamltext.listing(unknown)}; "
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
    if not isinstance(media.get("enabled", True), bool):
        raise UsageError(f"{w}.enabled must be true or false")
    public_url = media.get("public_url", "")
    if not isinstance(public_url, str) or public_url and not public_url.startswith(
            ("http://", "https://")):
        raise UsageError(f"{w}.public_url must be an http(s):// URL, e.g. "
                         "https://cdn.example.com")
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
        if section is None:  # `fcm:` with every line under it commented out
            out.pop(name, None)
            continue
        if not isinstance(section, dict):
            raise UsageError(f"{where}: push.{name} must be a mapping")
        section = dict(_known_keys(section, cls, f"{where}: push.{name}"))
        for key, value in section.items():  # paths, ids and URLs
            if not isinstance(value, str):
                raise UsageError(f"{where}: push.{name}.{key} must be a string")
        if section.get(path_key):
            value = section[path_key]
            path = _setting_path(value, base, f"{where}: push.{name}.{path_key}")
            if not path.is_file():
                raise UsageError(f"{where}: push.{name}.{path_key}: no such file {path}")
            section[path_key] = str(path)
        out[name] = section
    if not isinstance(out.get("hide_body", False), bool):
        raise UsageError(f"{where}: push.hide_body must be true or false")
    for key in ("max_attempts", "backoff_ms", "backoff_max_ms", "concurrency"):
        if key in out:
            _check_number(out[key], f"{where}: push.{key}:", integer=True, zero=True)
    if "timeout_s" in out:
        _check_number(out["timeout_s"], f"{where}: push.timeout_s:", integer=False)
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
        raw = yamltext.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    except yamltext.YamlSyntaxError as exc:
        raise UsageError(f"{path.name}: {exc}") from None
    return parse(raw, str(path), port_offset)


def tls_ca(topo: Topology, home_root: Path) -> str:
    """The CA file clients of this deployment trust ("" without TLS, or when the operator
    supplies the certificate: then whatever signed it)."""
    if not topo.tls.enabled or topo.tls.cert:
        return ""
    return str((Path(topo.tls.ca) if topo.tls.ca else home_root / "tls") / "ca.pem")


def tls_material(topo: Topology, home_root: Path) -> dict[str, tuple[str, str]]:
    """Per region, the certificate chain and key its gateways and media endpoints serve,
    made (with the CA, when missing) under the home's `tls/`."""
    if not topo.tls.enabled:
        return {}
    if topo.tls.cert:
        return {r.name: (topo.tls.cert, topo.tls.key) for r in topo.regions}
    files = tls.CaFiles(Path(topo.tls.ca)) if topo.tls.ca else tls.ca_files(home_root)
    try:
        tls.init_ca(files, topo.name)
        out = {}
        for r in topo.regions:
            cert, key = tls.server_cert(files, f"gateway-{r.name}", r.tls_names(),
                                        out_dir=home_root / "tls")
            out[r.name] = (str(cert), str(key))
    except (tls.TlsError, OSError, ValueError) as exc:  # ValueError: a name x509 refuses
        raise UsageError(f"{Path(topo.source).name}: tls: {exc}") from None
    return out


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
    # it holds the JWT secret: 0600 from the start (a write then a chmod would leave it
    # readable by others in between), and atomic for a node restarting meanwhile
    write_private(path, cfg.to_json())
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
    sec = security.ensure(topo, home_root)
    proxies = link_proxies(topo.backend, topo.regions, topo.chaos) if proxy_binary else {}
    for region in topo.regions:
        if region.name in proxies:
            out.append(engine_programs.proxy_program(
                region.name, region.host, topo.chaos.proxy_port, proxies[region.name],
                proxy_binary, home_root))  # type: ignore[arg-type]
    seed: Region | None = None
    joined: list[str] = []  # Cassandra programs so far, in join order
    last: Program | None = None
    for region in topo.regions:
        for spec in engine_programs.provisioned(region.engines):
            if spec.engine == CASSANDRA:
                program = engine_programs.engine_program(
                    spec, region.name, region.host, home_root,
                    seed=seed.host if seed else None, peers=len(joined), sec=sec)
                if alone_on_host(topo, region):
                    program.nice = PATH_NICE  # the supervisor sets it once it has warmed up
                program.depends_on = joined[-1:] + (
                    [f"toxiproxy.{region.name}"] if region.name in proxies else [])
                joined.append(program.name)
                seed = seed or region
                if sec is not None:  # logins and rights are made through the seed node
                    program.probe["setup"] = {"seed": seed.host,
                                              "port": seed.engines[CASSANDRA].ports["port"]}
                    last = program
            else:
                program = engine_programs.engine_program(spec, region.name, region.host,
                                                         home_root, sec=sec)
                if sec is not None and spec.engine == KAFKA:  # ACLs name every region
                    program.probe["acls"] = [r.name for r in topo.regions]
            out.append(program)
    if last is not None:  # every data center exists once the last node joined
        last.probe["setup"]["keyspace"] = engine_programs.KEYSPACE
    kafkas = {r.name: (r, r.engines[KAFKA]) for r in topo.regions if KAFKA in r.engines}
    if len(topo.regions) > 1 and all(spec.provisioned for _, spec in kafkas.values()):
        clusters = {name: engine_programs.engine_endpoint(spec, r.host)
                    for name, (r, spec) in kafkas.items()}
        kafka_programs = [p.name for p in out if p.runtimes == [KAFKA]]
        for name, (r, spec) in kafkas.items():
            out.append(engine_programs.mirror_program(
                name, r.host, clusters, spec, home_root,
                kafka_programs + ([f"toxiproxy.{name}"] if name in proxies else []), sec))
    return out


def peers_of(topo: Topology, region: Region) -> dict[str, tuple[str, dict[str, Any]]]:
    return {r.name: (r.host, r.engines) for r in topo.regions if r.name != region.name}


def alone_on_host(topo: Topology, region: Region) -> bool:
    """Whether no other region of the topology runs on `region`'s host (every loopback
    address is this one machine)."""
    def where(host: str) -> str:
        try:
            return "loopback" if ipaddress.ip_address(host).is_loopback else host
        except ValueError:
            return "loopback" if host == "localhost" else host

    mine = where(region.host)
    return sum(1 for r in topo.regions if where(r.host) == mine) == 1


def _plan_cluster(topo: Topology, region: Region, python: str, config_dir: Path,
                  home_dirs: dict[str, Path], secret: str,
                  engines: list[Program], home_root: Path,
                  certs: dict[str, tuple[str, str]], keyring: str) -> list[Program]:
    """One process per runtime, then the gateways; each waits for the one before it."""
    sec = security.ensure(topo, home_root)
    engines_cfg = engine_programs.engines_config(region.engines, region.name, region.host,
                                                 home_root=home_root,
                                                 peers=peers_of(topo, region),
                                                 secure=sec is not None)
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
    gateway_ids = [f"gateway-{i + 1}" for i in range(region.gateway_processes)]
    units += [(gateway_id, ["gateway"], region.gateway_port + i, gateway_id,
               region.media_port + i if region.media_port else 0)
              for i, gateway_id in enumerate(gateway_ids)]
    for unit, runtimes, port, gateway_id, media_port in units:
        name = f"{unit}.{region.name}"
        is_gateway = runtimes == ["gateway"]
        # the gateways' ports serve clients: TLS; the other runtimes' ports only answer
        # the supervisor's probes and metrics scrapes on the region's host
        cert, key = certs.get(region.name, ("", "")) if is_gateway else ("", "")
        # the gateways seal and open bodies, push opens them for notifications
        keys = keyring if runtimes in (["gateway"], ["push"]) else ""
        engines_role = security.for_role(engines_cfg, sec, runtimes[0], region.engines)
        cfg = node_config(topo, region, home_dirs, secret, port=port, runtimes=runtimes,
                          gateway_id=gateway_id, region_gateways=gateway_ids,
                          backend="cluster", engines=engines_role,
                          media=MediaConfig(**(topo.media | {"port": media_port})),
                          schema_owner=region is first, tls_cert=cert, tls_key=key,
                          keyring=keys)
        path = _write_config(config_dir, name, cfg)
        base = (f"{region.http_scheme}://{region.host}" if is_gateway else http)
        out.append(Program(
            name=name, region=region.name, runtimes=runtimes,
            nice=PATH_NICE if (is_gateway or runtimes == ["sequencer"])
            and alone_on_host(topo, region) else 0,
            argv=[python, "-m", "runtime.node", "--config", str(path)],
            health_url=f"{base}:{port}/readyz",
            endpoint=region.gateway_ws_url(port - region.gateway_port) if is_gateway
            else f"{http}:{port}",
            probe=_probe(f"{base}:{port}/readyz", tls_ca(topo, home_root)),
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
    The agents (`plan_agents`) come before all of them; `up` plans them apart, as it
    looks for agents already running.
    """
    programs: list[Program] = []
    config_dir.mkdir(parents=True, exist_ok=True)
    root = home_root or config_dir.parent
    certs = tls_material(topo, root)
    keyring = ""
    if topo.encryption.enabled:
        try:
            keyring_file.ensure(keyring_path(root))
        except keyring_mod.KeyringError as exc:
            raise UsageError(str(exc)) from None
        keyring = str(keyring_path(root))
    if topo.backend == "cluster":
        engines = plan_engines(topo, root, proxy_binary)
        programs += engines
        for region in topo.regions:
            programs += _plan_cluster(topo, region, python, config_dir, home_dirs, secret,
                                      engines, root, certs, keyring)
        return programs
    for region in topo.regions:
        cert, key = certs.get(region.name, ("", ""))
        cfg = node_config(topo, region, home_dirs, secret, tls_cert=cert, tls_key=key,
                          keyring=keyring)
        cfg_path = _write_config(config_dir, f"node.{region.name}", cfg)
        programs.append(Program(
            name=f"node.{region.name}", region=region.name, runtimes=list(RUNTIMES),
            argv=[python, "-m", "runtime.node", "--config", str(cfg_path)],
            health_url=f"{region.http_url}/readyz", endpoint=region.ws_url,
            probe=_probe(f"{region.http_url}/readyz", tls_ca(topo, root))))
    return programs


def agent_credentials(topo: Topology, home_root: Path) -> dict[str, str]:
    """The CA the agents and the operator share (the deployment's, made when missing) and
    the operator's client certificate: what `deployment.json` tells the CLI."""
    files = tls.CaFiles(Path(topo.tls.ca)) if topo.tls.ca else tls.ca_files(home_root)
    try:
        tls.init_ca(files, topo.name)
    except (tls.TlsError, OSError) as exc:
        raise UsageError(f"cannot make the agents' CA: {exc}") from None
    return files.to_json()


def _check_bindable(address: str, what: str) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            raise UsageError(f"{what} cannot listen on {address} ({exc.strerror}); stop what "
                             "holds it, or choose other ports with --port-offset") from None


def plan_agents(topo: Topology, python: str, home_root: Path) -> list[Program]:
    """One agent per region that names an `agent:` address (first in the plan: it is how
    the operator watches the rest come up), each with a server certificate for its host."""
    out: list[Program] = []
    if not any(r.agent for r in topo.regions):
        return out
    from msgctl.agent.transport import Credentials, healthy

    creds = agent_credentials(topo, home_root)
    files = tls.CaFiles(Path(creds["ca"]).parent)
    trusted = Credentials(Path(creds["ca"]), Path(creds["client_cert"]),
                          Path(creds["client_key"]))
    for r in topo.regions:
        if not r.agent or healthy(r.agent, trusted, 1.0):
            continue  # none, or one already runs there (`msgctl agent serve`): use it
        _check_bindable(r.agent, f"the agent of {r.name}")
        host = r.agent.rsplit(":", 1)[0]
        names = Region(r.name, host, r.gateway_port).tls_names()
        try:
            cert, key = tls.server_cert(files, f"agent-{r.name}", names,
                                        out_dir=home_root / "tls")
        except (tls.TlsError, OSError, ValueError) as exc:
            raise UsageError(f"cannot issue the agent certificate of {r.name}: {exc}") from None
        out.append(Program(
            name=f"agent.{r.name}", region=r.name, runtimes=["agent"],
            argv=[python, "-m", "msgctl.agent.server", "--home", str(home_root),
                  "--region", r.name, "--listen", r.agent, "--ca", creds["ca"],
                  "--cert", str(cert), "--key", str(key)],
            health_url="", endpoint=r.agent,
            probe={"kind": "grpc", "address": r.agent, **creds},
            start_timeout=30.0, stop_timeout=5.0,
            cgroup=""))  # outside the region's cgroup: a partition never cuts it off
    return out


def _probe(url: str, ca: str) -> dict[str, Any]:
    """An HTTP readiness probe; over https it trusts the deployment's CA."""
    return {"kind": "http", "url": url, "ca": ca} if url.startswith("https:") else {}


def to_json(topo: Topology, home_root: Path | None = None) -> str:
    regions = []
    sec = security.of(topo, home_root) if home_root is not None else None
    secure = sec is not None
    for r in topo.regions:
        entry: dict[str, Any] = {"name": r.name, "host": r.host, "gateway_port": r.gateway_port,
                                 "ws_url": r.ws_url, "http_url": r.http_url}
        if r.agent:
            entry["agent"] = r.agent
        if topo.backend == "cluster":
            entry["gateway_urls"] = [r.gateway_ws_url(i) for i in range(r.gateway_processes)]
            entry["engines"] = {e: engine_programs.engine_endpoint(s, r.host, secure)
                                for e, s in r.engines.items()}
            if sec is not None and r.engines[KAFKA].provisioned:
                # msgctl's own Kafka client settings there (paths only): replication lag
                entry["kafka_client"] = security.kafka_client(sec)
        regions.append(entry)
    encryption = {"enabled": topo.encryption.enabled,
                  "keyring": str(keyring_path(home_root))
                  if home_root is not None and topo.encryption.enabled else ""}
    tls_info = {"enabled": topo.tls.enabled,
                "ca": tls_ca(topo, home_root) if home_root is not None else ""}
    agents = (agent_credentials(topo, home_root) if home_root is not None and
              any(r.agent for r in topo.regions) else None)
    return json.dumps({"name": topo.name, "backend": topo.backend, "source": topo.source,
                       "regions": regions, "tls": tls_info, "encryption": encryption,
                       "engine_security": security.describe(sec, topo),
                       **({"agents": agents} if agents else {})},
                      indent=2)
