"""Engine programs of a region for the supervisor, and where the runtimes find the engines.

Each provisioned engine gets a folder under the deployment home,
``<home>/engines/<engine>.<region>/{conf,data,logs}``; its console output goes
to ``<home>/logs/<engine>.<region>.log`` like every program's. External engines
get no program; the runtimes are simply pointed at them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from msgctl.errors import MsgctlError
from msgctl.home import PRIVATE_UMASK, open_private
from msgctl.infra import cassandra, fetch, kafka, mirror, redis, s3, security, toxiproxy
from msgctl.infra.catalog import CASSANDRA, ENGINES, KAFKA, REDIS, S3
from msgctl.infra.security import EngineSecurity
from msgctl.infra.spec import EngineSpec
from msgctl.supervisor.program import ENGINE, Program
from runtime.config import EnginesConfig

# Cassandra needs ~40 s on a small machine, more under load; a slow start is not a failure
ENGINE_START_TIMEOUT = 180.0
ENGINE_STOP_TIMEOUT = 60.0  # Cassandra drains and flushes on SIGTERM
KEYSPACE = "msgctl"  # the runtimes' Cassandra keyspace


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    path = shutil.which("java")
    if path is None:
        raise MsgctlError("java is not on PATH; install Java 17+, or point the topology at "
                          "running engines with 'external:'")
    return path


def engine_home(home_root: Path, engine: str, region: str) -> Path:
    return home_root / "engines" / f"{engine}.{region}"


def _lib(spec: EngineSpec) -> Path:
    hit = fetch.cached(spec.engine, spec.version)
    if hit is None:
        raise MsgctlError(f"{spec.engine} {spec.version} is not in the cache "
                          f"({fetch.cache_root()}); run 'msgctl infra fetch'")
    return hit.path / "lib"


def engine_endpoint(spec: EngineSpec, host: str, secure: bool = False) -> str:
    """Where clients reach an engine; `secure`: a provisioned one serves TLS."""
    if spec.engine == REDIS:
        return spec.external or f"redis{'s' if secure else ''}://{host}:{spec.ports['port']}/0"
    if spec.engine == S3:
        return spec.external or f"http{'s' if secure else ''}://{host}:{spec.ports['port']}"
    if spec.engine == CASSANDRA and spec.external:
        return ",".join(f"{h}:{spec.port}" for h in spec.external.split(","))
    return spec.external or f"{host}:{spec.ports['port']}"


def engine_program(spec: EngineSpec, region: str, host: str, home_root: Path,
                   seed: str | None = None, peers: int = 0,
                   sec: EngineSecurity | None = None) -> Program:
    """The supervised program of one provisioned engine (configs written now).

    Cassandra of a region after the first: `seed` is the first region's host and
    `peers` the nodes started before this one (its probe waits to see them).
    `sec`: the deployment's engine security (TLS only, authenticated clients)."""
    base = engine_home(home_root, spec.engine, region)
    conf, data, logs = base / "conf", base / "data", base / "logs"
    for d in (conf, data, logs):
        d.mkdir(parents=True, exist_ok=True)
    name = f"{spec.engine}.{region}"
    ports = spec.ports
    prepare: list[str] = []
    creates = None
    slack = 0
    if spec.engine == KAFKA:
        lib, jvm = _lib(spec), java()
        settings = None
        if sec is not None:
            keystore = security.write_keystore(conf, *sec.server(KAFKA, region))
            settings = kafka.security_settings(keystore, sec.ca, security.kafka_super_users(
                region))
        kafka.write_config(conf, data, host, ports["port"], ports["controller_port"],
                           spec.partitions, settings)
        argv = kafka.argv(jvm, lib, conf, logs, spec.heap_mb)
        prepare = kafka.format_argv(jvm, lib, conf, logs, data)
        creates = str(data / "log" / "meta.properties")
        probe = {"kind": "kafka", "bootstrap": f"{host}:{ports['port']}", **_client(sec)}
        version = spec.version
    elif spec.engine == CASSANDRA:
        lib, jvm = _lib(spec), java()
        settings = None
        if sec is not None:
            keystore = security.write_keystore(conf, *sec.server(CASSANDRA, region))
            settings = cassandra.security_settings(keystore, sec.ca)
        cassandra.write_config(conf, data, host, ports["port"], ports["storage_port"], region,
                               seed, settings)
        argv = cassandra.argv(jvm, lib, conf, data, logs, ports["jmx_port"], spec.heap_mb,
                              single_node=seed is None and not peers)
        slack = cassandra.TIMER_SLACK_US
        probe = {"kind": "cql", "host": host, "port": ports["port"], "datacenter": region,
                 **({"peers": peers} if peers else {}), **_client(sec)}
        version = spec.version
    elif spec.engine == S3:
        lib, jvm = _lib(spec), java()
        s3.write_config(conf, data, host, ports["port"],
                        sec.server(S3, region) if sec is not None else None)
        argv = s3.argv(jvm, lib, conf, spec.heap_mb)
        # the probe names the credentials file: plan.json holds no secret
        probe = {"kind": "s3", "endpoint": engine_endpoint(spec, host, sec is not None),
                 "credentials": str(conf / "credentials.json"),
                 **({"ca": str(sec.ca)} if sec is not None else {})}
        version = spec.version
    else:
        binary = redis.binary()
        argv = redis.argv(binary, host, ports["port"], data, *_redis_security(sec, conf, region))
        probe = {"kind": "redis", "url": engine_endpoint(spec, host, sec is not None),
                 **_client(sec)}
        version = redis.version(binary)
    return Program(
        name=name, region=region, runtimes=[spec.engine], argv=argv, health_url="",
        endpoint=engine_endpoint(spec, host, sec is not None), kind=ENGINE, probe=probe,
        cwd=str(base),
        start_timeout=ENGINE_START_TIMEOUT, stop_timeout=ENGINE_STOP_TIMEOUT,
        prepare=prepare, prepare_creates=creates, warmup_s=spec.warmup_s,
        timer_slack_us=slack,
        info={"engine": spec.engine, "version": version, "ports": dict(ports),
              "data_dir": str(data), "conf_dir": str(conf), "host": host})


def mirror_program(region: str, host: str, clusters: dict[str, str], kafka_spec: EngineSpec,
                   home_root: Path, depends_on: list[str],
                   sec: EngineSecurity | None = None) -> Program:
    """MirrorMaker 2 (dedicated mode) replicating every other region into `region`; with
    `sec`, over SSL as msgctl-mirror."""
    base = engine_home(home_root, "mirror", region)
    conf, logs = base / "conf", base / "logs"
    for d in (conf, logs):
        d.mkdir(parents=True, exist_ok=True)
    ssl = None
    if sec is not None:
        ssl = (security.write_keystore(conf, *sec.identity(security.MIRROR)), sec.ca)
    mirror.write_config(conf, clusters, ssl)
    argv = mirror.argv(java(), _lib(kafka_spec), conf, logs, region)
    peers = [c for c in clusters if c != region]
    return Program(
        name=f"mirror.{region}", region=region, runtimes=["mirror"], argv=argv, health_url="",
        endpoint=" ".join(f"{p}->{region}" for p in peers), kind=ENGINE,
        probe={"kind": "mirror", "bootstrap": clusters[region],
               "topics": [f"{p}.heartbeats" for p in peers],
               "sources": {p: clusters[p] for p in peers}, **_client(sec)},
        cwd=str(base), start_timeout=ENGINE_START_TIMEOUT, stop_timeout=30.0,
        # as long as its Kafka's: a cold MM2 compiling its copy path used 16-22% of a
        # core in the first 20 s of traffic, 5% a minute later (docs/regions.md)
        warmup_s=kafka_spec.warmup_s,
        depends_on=depends_on,
        info={"engine": "mirror", "version": kafka_spec.version, "ports": {},
              "conf_dir": str(conf), "host": host, "sources": peers})


def proxy_program(region: str, host: str, api_port: int, proxies: list[toxiproxy.LinkProxy],
                  binary: Path, home_root: Path) -> Program:
    """The Toxiproxy that carries `region`'s connections to the other regions."""
    base = engine_home(home_root, toxiproxy.NAME, region)
    conf = base / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    config = toxiproxy.write_config(conf, proxies)
    api = f"http://{host}:{api_port}"
    return Program(
        name=f"toxiproxy.{region}", region=region, runtimes=["toxiproxy"],
        argv=toxiproxy.argv(binary, host, api_port, config), health_url=f"{api}/version",
        endpoint=api, kind=ENGINE, probe={"kind": "http", "url": f"{api}/version"},
        cwd=str(base), start_timeout=30.0, stop_timeout=5.0, cgroup="proxy",
        info={"engine": toxiproxy.NAME, "version": toxiproxy.VERSION,
              "ports": {"api": api_port, **{p.name: p.listen_port for p in proxies}},
              "conf_dir": str(conf), "host": host})


def _client(sec: EngineSecurity | None) -> dict[str, Any]:
    """What a probe needs to be let in: msgctl's own identity (paths only: plan.json holds
    no secret)."""
    return {} if sec is None else {"security": sec.client(security.ADMIN)}


def _redis_security(sec: EngineSecurity | None, conf: Path, region: str
                    ) -> tuple[tuple[Path, Path, Path] | None, Path | None]:
    if sec is None:
        return None, None
    cert, key = sec.server(REDIS, region)
    users = {security.redis_user(who): password for who, password in sec.passwords().items()}
    acl = redis.write_acl(conf, users, admin=security.redis_user(security.ADMIN))
    return (cert, key, sec.ca), acl


def datacenter(specs: dict[str, EngineSpec], region: str) -> str:
    c = specs[CASSANDRA]
    return c.datacenter if c.external else region


def engines_config(specs: dict[str, EngineSpec], region: str, host: str,
                   home_root: Path | None = None,
                   peers: dict[str, tuple[str, dict[str, EngineSpec]]] | None = None,
                   secure: bool = False) -> EnginesConfig:
    """Where the runtimes of a region find Kafka, Cassandra, Redis and S3 (when it has one).

    `peers` are the other regions (name -> host, engines): their Kafka takes the sends
    of conversations homed there, their Redis says who is online there, and their
    data centers hold replicas of the keyspace.
    A provisioned S3Proxy's credentials live in its engine folder (`home_root` needed).
    `secure`: the provisioned engines serve TLS (the identity: security.for_role)."""
    k, c, r = specs[KAFKA], specs[CASSANDRA], specs[REDIS]
    dc = datacenter(specs, region)
    # external engines: reached as the topology says (their own CA, Cassandra's login)
    external = {name: s for name, s in specs.items() if s.external}
    hosts, port = (c.external.split(","), c.port) if c.external else ([host], c.ports["port"])
    peers = peers or {}
    replication = {dc: 1} | {datacenter(e, name): 1 for name, (_, e) in peers.items()}
    return EnginesConfig(
        kafka_bootstrap=engine_endpoint(k, host), cassandra_hosts=hosts, cassandra_port=port,
        cassandra_dc=dc, keyspace=KEYSPACE, replication=replication,
        redis_url=engine_endpoint(r, host, secure), partitions=k.partitions,
        txn_interval_ms=k.txn_interval_ms,
        peer_kafka={name: engine_endpoint(e[KAFKA], h) for name, (h, e) in peers.items()},
        peer_redis={name: engine_endpoint(e[REDIS], h, secure)
                    for name, (h, e) in peers.items()},
        engine_ca={name: s.ca for name, s in external.items()},
        kafka_tls=bool(k.external and k.ca), cassandra_tls=bool(c.external and c.ca),
        cassandra_user=c.login.get("username", ""), cassandra_password=c.login.get("password", ""),
        **_s3_settings(specs.get(S3), region, host, home_root, secure))


def _s3_settings(spec: EngineSpec | None, region: str, host: str,
                 home_root: Path | None, secure: bool = False) -> dict[str, str]:
    if spec is None:
        return {}
    if spec.external:
        return {"s3_endpoint": spec.external, "s3_access_key": spec.s3["access_key"],
                "s3_secret_key": spec.s3["secret_key"],
                "s3_bucket": spec.s3.get("bucket", s3.BUCKET),
                "s3_region": spec.s3.get("region", s3.REGION)}
    if home_root is None:
        raise ValueError("a provisioned s3 needs the deployment home for its credentials")
    identity, credential = s3.credentials(engine_home(home_root, S3, region) / "conf")
    return {"s3_endpoint": engine_endpoint(spec, host, secure), "s3_access_key": identity,
            "s3_secret_key": credential, "s3_bucket": s3.BUCKET, "s3_region": s3.REGION}


def provisioned(specs: dict[str, EngineSpec]) -> list[EngineSpec]:
    return [specs[e] for e in ENGINES if e in specs and specs[e].provisioned]


def run_prepare(program: Program, log_path: Path, timeout: float = 120.0) -> bool:
    """Run a program's one-shot prepare step unless its result exists; True if it ran."""
    if not program.prepare or (program.prepare_creates
                               and Path(program.prepare_creates).exists()):
        return False
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # the step formats an engine's storage in the deployment home: private (msgctl.home)
    with open_private(log_path) as out:
        try:
            code = subprocess.run(program.prepare, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, cwd=program.cwd,
                                  timeout=timeout, umask=PRIVATE_UMASK).returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        what = "timed out" if code is None else f"exited {code}"
        raise MsgctlError(f"{program.name}: preparing its storage {what}; see {log_path}")
    return True
