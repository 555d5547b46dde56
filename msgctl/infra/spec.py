"""The ``engines:`` mapping of a region in a topology: provisioned by msgctl, or external.

    engines:
      kafka: {port: 9092, controller_port: 9093, version: 4.1.1, heap_mb: 512, warmup_s: 120,
              partitions: 1, txn_interval_ms: 8}
      cassandra: {port: 9042, storage_port: 7000, jmx_port: 7199, heap_mb: 512,
                  warmup_s: 120}
      redis: {port: 6379}
      s3: {port: 9000}          # optional: S3Proxy, media in the cluster family

or, for engines that already run elsewhere (then msgctl starts only the runtimes):

      kafka: {external: "host1:9092,host2:9092", ca: ..., partitions: 1,
              txn_interval_ms: 8}  # ca: then SSL
      cassandra: {external: "10.0.0.1,10.0.0.2", port: 9042, datacenter: dc1,
                  username: app, password: ..., ca: /etc/ssl/cassandra-ca.pem}  # optional
      redis: {external: "rediss://user:password@host:6380/0", ca: ...}  # ca optional
      s3: {external: "https://s3.eu-west-1.amazonaws.com", access_key: ..., secret_key: ...,
           bucket: msgctl-media, region: eu-west-1}

Every mistake is one line naming the region, engine and setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgctl import yamltext
from msgctl.errors import UsageError
from msgctl.infra.catalog import CASSANDRA, CATALOG, ENGINES, KAFKA, REDIS, S3
from runtime.config import DEFAULT_TXN_INTERVAL_MS

OPTIONAL = (S3,)  # a cluster region without s3 answers media requests `unavailable`
S3_EXTERNAL = {"access_key", "secret_key", "bucket", "region"}
# what an external engine may carry to be reached securely: `ca` (a CA file its
# certificate chains to: TLS with that CA; Redis and S3 take TLS from their URL's scheme
# and trust the system's roots without it), and Cassandra's login
CASSANDRA_LOGIN = {"username", "password"}
MAX_WARMUP_S = 600
# of the topics msgctl creates (msg.ingress, msg.events, msg.seq-state...). One sequencer
# and one router per region read all of them, so more partitions add no parallelism, only
# broker work: each partition a transaction touches is one more produce request and one
# more commit marker (at 200 msgs/s on one broker, 8 partitions doubled the transaction's
# time against 2; at 1,000 msgs/s 1 partition took 8 ms a transaction against 13 for 2)
DEFAULT_PARTITIONS = 1
MAX_PARTITIONS = 256
MAX_TXN_INTERVAL_MS = 1000
KAFKA_USAGE = {"partitions", "txn_interval_ms"}  # how the runtimes use Kafka, either kind


@dataclass(frozen=True)
class EngineSpec:
    engine: str
    external: str | None = None  # the address list or URL when msgctl does not run it
    version: str = ""
    heap_mb: int = 0
    warmup_s: float = 0.0  # provisioned Kafka and Cassandra: see msgctl.infra.warmup
    partitions: int = DEFAULT_PARTITIONS  # kafka: of the topics msgctl creates
    txn_interval_ms: int = DEFAULT_TXN_INTERVAL_MS  # kafka: between sequencer transactions
    ports: dict[str, int] = field(default_factory=dict)  # provisioned: setting -> port
    port: int = 0  # external cassandra: its CQL port
    datacenter: str = ""  # external cassandra: the local data center
    s3: dict[str, str] = field(default_factory=dict)  # external s3: access_key, secret_key..
    ca: str = ""  # external: the CA file to trust ("" = the system's roots)
    login: dict[str, str] = field(default_factory=dict)  # external cassandra: username, ..

    @property
    def provisioned(self) -> bool:
        return self.external is None


def _port(value: Any, where: str, offset: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{where} must be an integer port")
    port = value + offset
    if not 1 <= port <= 65535:
        raise UsageError(f"{where}: port {port} is out of range 1-65535")
    return port


def _ca(raw: dict[str, Any], where: str) -> str:
    value = raw.get("ca")
    if value is None:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}.ca must be the path of a CA file (PEM)")
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        raise UsageError(f"{where}.ca: no such file {path}")
    return str(path.resolve())


def _kafka_int(raw: dict[str, Any], key: str, where: str, default: int, low: int,
               high: int, unit: str = "") -> int:
    """A Kafka usage setting (`KAFKA_USAGE`): an integer from `low` to `high`."""
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{where}.{key} must be an integer from {low} to {high}{unit}")
    return value


def _partitions(raw: dict[str, Any], where: str) -> int:
    return _kafka_int(raw, "partitions", where, DEFAULT_PARTITIONS, 1, MAX_PARTITIONS)


def _txn_interval(raw: dict[str, Any], where: str) -> int:
    return _kafka_int(raw, "txn_interval_ms", where, DEFAULT_TXN_INTERVAL_MS, 0,
                      MAX_TXN_INTERVAL_MS, " (milliseconds; 0: no wait)")


def _external(engine: str, raw: dict[str, Any], where: str) -> EngineSpec:
    allowed = {"external", "ca"} | (
        {"port", "datacenter"} | CASSANDRA_LOGIN if engine == CASSANDRA else
        S3_EXTERNAL if engine == S3 else KAFKA_USAGE if engine == KAFKA else set())
    unknown = set(raw) - allowed
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {yamltext.listing(unknown)} for an "
                         f"external {engine}; known: {', '.join(sorted(allowed))}")
    value = raw["external"]
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}.external must be a non-empty string")
    value = value.strip()
    ca = _ca(raw, where)
    if engine == KAFKA:
        for hp in value.split(","):
            host, _, port = hp.strip().rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise UsageError(f"{where}.external: '{hp.strip()}' is not host:port "
                                 "(a comma-separated bootstrap list)")
        return EngineSpec(engine, external=",".join(h.strip() for h in value.split(",")),
                          ca=ca, partitions=_partitions(raw, where),
                          txn_interval_ms=_txn_interval(raw, where))
    if engine == S3:
        if not value.startswith(("http://", "https://")):
            raise UsageError(f"{where}.external must be an http(s):// S3 endpoint URL, e.g. "
                             "http://host:9000")
        extra: dict[str, str] = {}
        for key in sorted(S3_EXTERNAL):
            item = raw.get(key)
            if item is not None and (not isinstance(item, str) or not item):
                raise UsageError(f"{where}.{key} must be a non-empty string")
            if item is not None:
                extra[key] = item
        missing = [k for k in ("access_key", "secret_key") if k not in extra]
        if missing:
            raise UsageError(f"{where}: an external s3 needs {' and '.join(missing)}")
        return EngineSpec(engine, external=value.rstrip("/"), s3=extra, ca=ca)
    if engine == REDIS:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise UsageError(f"{where}.external must be a redis:// URL, e.g. "
                             "redis://host:6379/0")
        return EngineSpec(engine, external=value, ca=ca)
    hosts = [h.strip() for h in value.split(",")]
    if not all(hosts) or any(":" in h for h in hosts):
        raise UsageError(f"{where}.external must be a comma-separated list of hosts "
                         "(the CQL port goes in 'port')")
    dc = raw.get("datacenter")
    if not isinstance(dc, str) or not dc:
        raise UsageError(f"{where}: an external cassandra needs 'datacenter' (the local "
                         "data center for LOCAL_QUORUM)")
    port = _port(raw.get("port", 9042), f"{where}.port", 0)
    login = {k: raw[k] for k in sorted(CASSANDRA_LOGIN) if k in raw}
    if any(not isinstance(v, str) or not v for v in login.values()) or len(login) == 1:
        raise UsageError(f"{where}: username and password go together, each a non-empty "
                         "string")
    return EngineSpec(engine, external=",".join(hosts), port=port, datacenter=dc, ca=ca,
                      login=login)


def _provisioned(engine: str, raw: dict[str, Any], where: str, offset: int) -> EngineSpec:
    cat = CATALOG[engine]
    allowed = set(cat.ports) | {"version", "heap_mb"} if cat.source == "maven" else set(cat.ports)
    if cat.default_warmup_s:
        allowed.add("warmup_s")
    if engine == KAFKA:
        allowed |= KAFKA_USAGE
    unknown = set(raw) - allowed
    if unknown:
        hint = " ('datacenter' is for an external cassandra)" if "datacenter" in unknown else ""
        raise UsageError(f"{where}: unknown setting(s) {yamltext.listing(unknown)}{hint}; "
                         f"known: {', '.join(sorted(allowed | {'external'}))}")
    ports: dict[str, int] = {}
    for key, default in cat.ports.items():
        if key in raw:
            ports[key] = _port(raw[key], f"{where}.{key}", offset)
        elif key == "controller_port" and "port" in raw:
            ports[key] = ports["port"] + 1  # beside the broker unless told otherwise
        else:
            ports[key] = default + offset
    if len(set(ports.values())) != len(ports):
        raise UsageError(f"{where}: {', '.join(ports)} must be different ports")
    version = raw.get("version", cat.default_version)
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip() or "/" in version:
        raise UsageError(f"{where}.version must be a version string like "
                         f"{cat.default_version}")
    heap = raw.get("heap_mb", cat.default_heap_mb)
    if cat.source == "maven" and (not isinstance(heap, int) or isinstance(heap, bool)
                                  or not 128 <= heap <= 65536):
        raise UsageError(f"{where}.heap_mb must be an integer from 128 to 65536")
    warmup = raw.get("warmup_s", cat.default_warmup_s)
    if (not isinstance(warmup, int | float) or isinstance(warmup, bool)
            or not 0 <= warmup <= MAX_WARMUP_S):
        raise UsageError(f"{where}.warmup_s must be a number of seconds from 0 to "
                         f"{MAX_WARMUP_S} (0: no warm-up)")
    return EngineSpec(engine, version=version.strip(), heap_mb=heap, ports=ports,
                      warmup_s=float(warmup),
                      partitions=_partitions(raw, where) if engine == KAFKA else
                      DEFAULT_PARTITIONS,
                      txn_interval_ms=_txn_interval(raw, where) if engine == KAFKA else
                      DEFAULT_TXN_INTERVAL_MS)


def parse_engines(raw: Any, where: str, offset: int) -> dict[str, EngineSpec]:
    """A region's ``engines:`` mapping; every engine but s3 is required (backend cluster)."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: 'engines' must be a mapping of {', '.join(ENGINES)} "
                         "(backend cluster)")
    unknown = set(raw) - set(ENGINES)
    if unknown:
        raise UsageError(f"{where}.engines: unknown engine(s) {yamltext.listing(unknown)}; "
                         f"known: {', '.join(ENGINES)}")
    out: dict[str, EngineSpec] = {}
    for engine in ENGINES:
        ew = f"{where}.engines.{engine}"
        if engine not in raw and engine in OPTIONAL:
            continue
        if engine not in raw:
            raise UsageError(f"{where}.engines: '{engine}' is missing (give a port to run it, "
                             "or external: to use one that runs elsewhere)")
        value = raw[engine] if raw[engine] is not None else {}
        if not isinstance(value, dict):
            raise UsageError(f"{ew} must be a mapping (e.g. {{port: "
                             f"{CATALOG[engine].ports['port']}}} or {{external: ...}})")
        out[engine] = (_external(engine, value, ew) if "external" in value
                       else _provisioned(engine, value, ew, offset))
    return out
