"""Readiness probes that speak each engine's own protocol (never a port check, never a sleep).

Each probe returns a small dict when the engine answers (what it said: a
version, a broker count) and None when it does not. The blocking drivers run
in a worker thread so the supervisor's loop keeps going.

The supervisor looks at each Cassandra node again every 10 s for as long as it
runs, over a session it keeps (`keep`): a login costs the node a bcrypt check of
the password (100-170 ms of a core here, per connection, two connections per
driver session), which a fresh session every 10 s paid on the node's request
threads, a stall of a core under live traffic every time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

from msgctl.infra.security import client_engines as identity
from runtime.adapters.cluster import engine_auth

# the drivers log every refused connection while an engine is still starting;
# the probe's answer is the news, not their retries
for _name in ("cassandra", "cassandra.cluster", "cassandra.connection", "cassandra.pool"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def _cluster(hosts: list[str], port: int, datacenter: str | None, timeout: float,
             engines: Any, login: tuple[str, str] | None = None, light: bool = False) -> Any:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, WhiteListRoundRobinPolicy

    policy = (WhiteListRoundRobinPolicy(hosts) if datacenter is None and hosts
              else DCAwareRoundRobinPolicy(local_dc=datacenter))
    profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=timeout)
    kwargs = engine_auth.cassandra_kwargs(engines)
    if login is not None:
        kwargs["auth_provider"] = PlainTextAuthProvider(*login)
    if light:  # a look at one node: no schema or token map to keep current
        kwargs |= {"schema_metadata_enabled": False, "token_metadata_enabled": False}
    return Cluster(hosts, port=port, connect_timeout=timeout,
                   control_connection_timeout=timeout, protocol_version=5,
                   execution_profiles={EXEC_PROFILE_DEFAULT: profile}, **kwargs)


def _refused_login(exc: Exception) -> bool:
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    return isinstance(exc, NoHostAvailable) and any(
        isinstance(e, AuthenticationFailed) for e in exc.errors.values())


def _cql_setup(setup: dict[str, Any], engines: Any, security: dict[str, Any],
               datacenter: str | None) -> None:
    """The logins and rights of the deployment (msgctl.infra.cassandra_auth), through the
    seed node, once this node's data center is part of the cluster."""
    from msgctl.infra import cassandra_auth

    seed, port = str(setup["seed"]), int(setup["port"])
    passwords = json.loads(Path(security["credentials"]).read_text())["passwords"]
    # DDL waits for schema agreement: longer than a readiness answer
    cluster = _cluster([seed], port, None, 30.0, engines)
    try:
        try:
            session = cluster.connect()
        except Exception as exc:
            if not _refused_login(exc):
                raise
            cluster.shutdown()  # a fresh cluster: only the default superuser so far
            cluster = _cluster([seed], port, None, 30.0, engines, cassandra_auth.DEFAULT)
            cassandra_auth.bootstrap(cluster.connect(), engines.cassandra_user,
                                     passwords[security["identity"]])
            cluster.shutdown()
            cluster = _cluster([seed], port, None, 30.0, engines)
            session = cluster.connect()
        if datacenter and datacenter not in cassandra_auth.datacenters(session):
            raise RuntimeError(f"data center {datacenter} has not joined yet")
        cassandra_auth.ensure(session, passwords, setup.get("keyspace"))
    finally:
        cluster.shutdown()


# (host, port, data center, identity) -> a kept session's cluster and session
_kept: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_kept_lock = threading.Lock()


def _look(session: Any, peers: int) -> dict[str, Any]:
    row = session.execute("SELECT release_version, data_center FROM system.local").one()
    seen = len(list(session.execute("SELECT peer FROM system.peers_v2"))) if peers else 0
    if seen < peers:  # a joining node is ready once it sees the nodes before it
        raise RuntimeError(f"{seen} of {peers} peers known")
    return {"version": row.release_version, "datacenter": row.data_center,
            **({"peers": seen} if peers else {})}


def _cql(host: str, port: int, datacenter: str | None, timeout: float,
         peers: int = 0, security: dict[str, Any] | None = None,
         setup: dict[str, Any] | None = None, keep: bool = False) -> dict[str, Any]:
    engines = identity(security)
    if setup is not None and security:
        _cql_setup(setup, engines, security, datacenter)
    if not keep:
        cluster = _cluster([host], port, datacenter or None, timeout, engines)
        try:
            return _look(cluster.connect(), peers)
        finally:
            cluster.shutdown()
    key = (host, port, datacenter, json.dumps(security, sort_keys=True, default=str))
    with _kept_lock:
        kept = _kept.pop(key, None)  # one caller at a time uses a kept session
    if kept is None:
        cluster = _cluster([host], port, datacenter or None, timeout, engines, light=True)
        try:
            kept = (cluster, cluster.connect())
        except Exception:
            cluster.shutdown()
            raise
    try:
        answer = _look(kept[1], peers)
    except Exception:
        kept[0].shutdown()  # the next look logs in again
        raise
    with _kept_lock:
        other = _kept.setdefault(key, kept)
    if other is not kept:  # a look beside this one kept its own meanwhile
        kept[0].shutdown()
    return answer


def forget_sessions() -> None:
    """Close the sessions kept for looks at Cassandra nodes."""
    with _kept_lock:
        kept = list(_kept.values())
        _kept.clear()
    for cluster, _ in kept:
        cluster.shutdown()


def _kafka_admin(bootstrap: str, timeout: float, security: dict[str, Any] | None) -> Any:
    from confluent_kafka.admin import AdminClient

    # log_level 0: librdkafka would print every refused connection to stderr
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                        "socket.connection.setup.timeout.ms": int(timeout * 1000),
                        **engine_auth.kafka_settings(identity(security))})


def _kafka(bootstrap: str, timeout: float, security: dict[str, Any] | None = None,
           acls: list[str] | None = None) -> dict[str, Any]:
    admin = _kafka_admin(bootstrap, timeout, security)
    meta = admin.list_topics(timeout=timeout)
    if not meta.brokers:
        raise RuntimeError("no broker in the metadata")
    if acls is not None:  # the runtimes start once this is ready: their rights first
        from msgctl.infra import kafka_acls

        kafka_acls.ensure(admin, acls, timeout)
    return {"brokers": len(meta.brokers), "cluster_id": meta.cluster_id}


def _kafka_topics(bootstrap: str, topics: list[str], timeout: float,
                  security: dict[str, Any] | None = None) -> dict[str, Any]:
    admin = _kafka_admin(bootstrap, timeout, security)
    have = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in topics if t not in have]
    if missing:
        raise RuntimeError(f"not there yet: {', '.join(missing)}")
    return {"topics": len(topics)}


def _s3(endpoint: str, access_key: str, secret_key: str, timeout: float,
        ca: str = "") -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name="us-east-1", verify=ca or True,
        config=Config(signature_version="s3v4", connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    buckets = client.list_buckets()["Buckets"]  # a signed request: the credentials work too
    return {"buckets": len(buckets)}


async def s3(endpoint: str, access_key: str, secret_key: str,
             timeout: float = 5.0, ca: str = "") -> dict[str, Any] | None:
    """A signed ListBuckets answered (S3 API and credentials both work); an https
    endpoint's certificate checked against `ca` (the system's roots when empty)."""
    try:
        return await asyncio.to_thread(_s3, endpoint, access_key, secret_key, timeout, ca)
    except Exception:  # noqa: BLE001
        return None


async def cql(host: str, port: int, datacenter: str | None = None,
              timeout: float = 5.0, peers: int = 0, security: dict[str, Any] | None = None,
              setup: dict[str, Any] | None = None, keep: bool = False
              ) -> dict[str, Any] | None:
    """``SELECT release_version FROM system.local`` answered by the node (and, with
    `peers`, at least that many other nodes in its ``system.peers_v2``), logged in as
    msgctl with `security`; `setup` first makes the deployment's logins and rights
    (msgctl.infra.cassandra_auth) through its `seed` node. `keep`: over a session kept
    for the next look (one that fails is closed; `forget_sessions` closes the rest)."""
    try:
        return await asyncio.to_thread(_cql, host, port, datacenter, timeout, peers,
                                       security, setup, keep)
    except Exception:  # noqa: BLE001 - any driver failure means "not ready yet"
        return None


async def kafka(bootstrap: str, timeout: float = 5.0, security: dict[str, Any] | None = None,
                acls: list[str] | None = None) -> dict[str, Any] | None:
    """A metadata request answered with at least one broker (as msgctl, over SSL with
    `security`); with `acls` (the deployment's regions), the ACLs of
    msgctl.infra.kafka_acls are made first."""
    try:
        return await asyncio.to_thread(_kafka, bootstrap, timeout, security, acls)
    except Exception:  # noqa: BLE001
        return None


async def mirror(bootstrap: str, topics: list[str], timeout: float = 5.0,
                 security: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """MirrorMaker 2 is replicating into `bootstrap`: the mirrored topics it names exist."""
    try:
        return await asyncio.to_thread(_kafka_topics, bootstrap, topics, timeout, security)
    except Exception:  # noqa: BLE001
        return None


async def redis(url: str, timeout: float = 5.0,
                security: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """PING answered with PONG (as msgctl's ACL user, over TLS with `security`)."""
    import redis.asyncio as aioredis

    auth = engine_auth.redis_kwargs(identity(security), url)
    client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                               **auth)
    try:
        if await client.ping():
            info = await client.info("server")
            return {"version": info.get("redis_version")}
        return None
    except Exception:  # noqa: BLE001
        return None
    finally:
        await client.aclose()


def live_look(spec: dict[str, Any]) -> dict[str, Any]:
    """A probe spec without its start-time steps (Kafka's ACLs, Cassandra's logins and
    rights): what a look at an engine that was ready once runs."""
    return {k: v for k, v in spec.items() if k not in ("setup", "acls")}


async def check(spec: dict[str, Any], timeout: float = 5.0, keep: bool = False
                ) -> dict[str, Any] | None:
    """Run the probe a program's spec names (cql, kafka, mirror, redis or s3); `keep`:
    a Cassandra session stays open for the next look (see the module docstring)."""
    kind = spec.get("kind")
    if kind == "cql":
        return await cql(spec["host"], int(spec["port"]), spec.get("datacenter"), timeout,
                         int(spec.get("peers", 0)), spec.get("security"), spec.get("setup"),
                         keep)
    if kind == "mirror":
        return await mirror(spec["bootstrap"], list(spec["topics"]), timeout,
                            spec.get("security"))
    if kind == "kafka":
        return await kafka(spec["bootstrap"], timeout, spec.get("security"), spec.get("acls"))
    if kind == "redis":
        return await redis(spec["url"], timeout, spec.get("security"))
    if kind == "s3":
        try:
            creds = json.loads(Path(spec["credentials"]).read_text())
        except (OSError, ValueError):
            return None
        return await s3(spec["endpoint"], creds["identity"], creds["credential"], timeout,
                        spec.get("ca", ""))
    raise ValueError(f"unknown probe kind {kind!r}")
