"""Direct clients of a test deployment's engines, as msgctl's own identity (msgctl-admin).

Tests that reach past the runtimes (inject a record, read a session hash, drop a
keyspace) connect the way msgctl does: TLS with the deployment CA and msgctl's
client certificate, logged in as its Redis user and Cassandra superuser
(msgctl.infra.security). A home whose engines run without TLS gets plain clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgctl.infra import security
from runtime.adapters.cluster import engine_auth
from runtime.config import EnginesConfig


def admin(home: Path) -> EnginesConfig:
    return security.admin_engines(home)


def kafka_config(home: Path, bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A librdkafka config for `bootstrap` as msgctl-admin (a Kafka super user)."""
    return {"bootstrap.servers": bootstrap, **engine_auth.kafka_settings(admin(home)), **extra}


def redis_url(home: Path, port: int, host: str = "127.0.0.1") -> str:
    return f"{'rediss' if admin(home).redis_user else 'redis'}://{host}:{port}/0"


def redis_kwargs(home: Path, port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """Keyword arguments of `redis.Redis.from_url(redis_url(...), **...)`."""
    return engine_auth.redis_kwargs(admin(home), redis_url(home, port, host))


def cassandra_kwargs(home: Path) -> dict[str, Any]:
    """`cassandra.cluster.Cluster` keyword arguments: msgctl's login and TLS context."""
    return engine_auth.cassandra_kwargs(admin(home))


def s3_endpoint(home: Path, port: int, host: str = "127.0.0.1") -> tuple[str, str | bool]:
    """The S3Proxy URL and boto3's `verify` for it."""
    cfg = admin(home)
    scheme = "https" if cfg.tls_ca else "http"
    return f"{scheme}://{host}:{port}", cfg.tls_ca or True
