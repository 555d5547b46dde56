"""Readiness probes that speak each engine's own protocol (never a port check, never a sleep).

Each probe returns a small dict when the engine answers (what it said: a
version, a broker count) and None when it does not. The blocking drivers run
in a worker thread so the supervisor's loop keeps going.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

# the drivers log every refused connection while an engine is still starting;
# the probe's answer is the news, not their retries
for _name in ("cassandra", "cassandra.cluster", "cassandra.connection", "cassandra.pool"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def _cql(host: str, port: int, datacenter: str | None, timeout: float,
         peers: int = 0) -> dict[str, Any]:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=datacenter) if datacenter
        else DCAwareRoundRobinPolicy(), request_timeout=timeout)
    cluster = Cluster([host], port=port, connect_timeout=timeout,
                      control_connection_timeout=timeout, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version, data_center FROM system.local").one()
        seen = len(list(session.execute("SELECT peer FROM system.peers_v2"))) if peers else 0
        if seen < peers:  # a joining node is ready once it sees the nodes before it
            raise RuntimeError(f"{seen} of {peers} peers known")
        return {"version": row.release_version, "datacenter": row.data_center,
                **({"peers": seen} if peers else {})}
    finally:
        cluster.shutdown()


def _kafka(bootstrap: str, timeout: float) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    # log_level 0: librdkafka would print every refused connection to stderr
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                         "socket.connection.setup.timeout.ms": int(timeout * 1000)})
    meta = admin.list_topics(timeout=timeout)
    if not meta.brokers:
        raise RuntimeError("no broker in the metadata")
    return {"brokers": len(meta.brokers), "cluster_id": meta.cluster_id}


def _kafka_topics(bootstrap: str, topics: list[str], timeout: float) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                         "socket.connection.setup.timeout.ms": int(timeout * 1000)})
    have = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in topics if t not in have]
    if missing:
        raise RuntimeError(f"not there yet: {', '.join(missing)}")
    return {"topics": len(topics)}


def _s3(endpoint: str, access_key: str, secret_key: str, timeout: float) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name="us-east-1",
        config=Config(signature_version="s3v4", connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    buckets = client.list_buckets()["Buckets"]  # a signed request: the credentials work too
    return {"buckets": len(buckets)}


async def s3(endpoint: str, access_key: str, secret_key: str,
             timeout: float = 5.0) -> dict[str, Any] | None:
    """A signed ListBuckets answered (S3 API and credentials both work)."""
    try:
        return await asyncio.to_thread(_s3, endpoint, access_key, secret_key, timeout)
    except Exception:  # noqa: BLE001
        return None


async def cql(host: str, port: int, datacenter: str | None = None,
              timeout: float = 5.0, peers: int = 0) -> dict[str, Any] | None:
    """``SELECT release_version FROM system.local`` answered by the node (and, with
    `peers`, at least that many other nodes in its ``system.peers_v2``)."""
    try:
        return await asyncio.to_thread(_cql, host, port, datacenter, timeout, peers)
    except Exception:  # noqa: BLE001 - any driver failure means "not ready yet"
        return None


async def kafka(bootstrap: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """A metadata request answered with at least one broker."""
    try:
        return await asyncio.to_thread(_kafka, bootstrap, timeout)
    except Exception:  # noqa: BLE001
        return None


async def mirror(bootstrap: str, topics: list[str],
                 timeout: float = 5.0) -> dict[str, Any] | None:
    """MirrorMaker 2 is replicating into `bootstrap`: the mirrored topics it names exist."""
    try:
        return await asyncio.to_thread(_kafka_topics, bootstrap, topics, timeout)
    except Exception:  # noqa: BLE001
        return None


async def redis(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """PING answered with PONG."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        if await client.ping():
            info = await client.info("server")
            return {"version": info.get("redis_version")}
        return None
    except Exception:  # noqa: BLE001
        return None
    finally:
        await client.aclose()


async def check(spec: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
    """Run the probe a program's spec names (cql, kafka, mirror, redis or s3)."""
    kind = spec.get("kind")
    if kind == "cql":
        return await cql(spec["host"], int(spec["port"]), spec.get("datacenter"), timeout,
                         int(spec.get("peers", 0)))
    if kind == "mirror":
        return await mirror(spec["bootstrap"], list(spec["topics"]), timeout)
    if kind == "kafka":
        return await kafka(spec["bootstrap"], timeout)
    if kind == "redis":
        return await redis(spec["url"], timeout)
    if kind == "s3":
        try:
            creds = json.loads(Path(spec["credentials"]).read_text())
        except (OSError, ValueError):
            return None
        return await s3(spec["endpoint"], creds["identity"], creds["credential"], timeout)
    raise ValueError(f"unknown probe kind {kind!r}")
