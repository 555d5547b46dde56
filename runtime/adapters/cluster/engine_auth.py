"""How a runtime authenticates to the engines: the client settings of each driver.

msgctl writes the deployment CA, this runtime's client certificate (its engine
identity: the Kafka principal, the certificate Redis and Cassandra check) and
its Cassandra and Redis passwords into `EnginesConfig` (docs/security.md).
Empty settings mean what older deployments did: plain connections, no login.
"""

from __future__ import annotations

import ssl
from typing import Any

from runtime.config import EnginesConfig


def ca(engines: EnginesConfig, engine: str) -> str:
    """The CA file `engine`'s certificate chains to ("" for the system's roots)."""
    return engines.engine_ca.get(engine, engines.tls_ca)


def tls_context(engines: EnginesConfig, engine: str = "cassandra", *,
                client_cert: bool = True) -> ssl.SSLContext:
    """A client context trusting `engine`'s CA (the system's roots without one),
    presenting this runtime's certificate when it has one."""
    ctx = ssl.create_default_context(cafile=ca(engines, engine) or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert and engines.tls_cert and engines.tls_key:
        ctx.load_cert_chain(engines.tls_cert, engines.tls_key)
    return ctx


def kafka_settings(engines: EnginesConfig) -> dict[str, Any]:
    """librdkafka settings (merged into every client's config) for SSL with this runtime's
    certificate; empty for a plaintext Kafka."""
    if not engines.kafka_tls:
        return {}
    out: dict[str, Any] = {"security.protocol": "ssl",
                           "ssl.endpoint.identification.algorithm": "https"}
    if ca(engines, "kafka"):
        out["ssl.ca.location"] = ca(engines, "kafka")
    if engines.tls_cert and engines.tls_key:
        out |= {"ssl.certificate.location": engines.tls_cert,
                "ssl.key.location": engines.tls_key}
    return out


def redis_kwargs(engines: EnginesConfig, url: str) -> dict[str, Any]:
    """redis-py keyword arguments for `url` (TLS when it is rediss://) as this runtime's
    ACL user."""
    out: dict[str, Any] = {}
    if engines.redis_user:
        out |= {"username": engines.redis_user, "password": engines.redis_password}
    if url.startswith("rediss://"):
        out["ssl_cert_reqs"] = "required"
        if ca(engines, "redis"):
            out["ssl_ca_certs"] = ca(engines, "redis")
        if engines.tls_cert and engines.tls_key:
            out |= {"ssl_certfile": engines.tls_cert, "ssl_keyfile": engines.tls_key}
    return out


def cassandra_kwargs(engines: EnginesConfig) -> dict[str, Any]:
    """`cassandra.cluster.Cluster` keyword arguments: the login and the TLS context."""
    out: dict[str, Any] = {}
    if engines.cassandra_user:
        from cassandra.auth import PlainTextAuthProvider

        out["auth_provider"] = PlainTextAuthProvider(engines.cassandra_user,
                                                     engines.cassandra_password)
    if engines.cassandra_tls:
        # the driver checks each node's certificate against the address it connects to
        # (the rpc_address the cluster gossips, which the node certificates name)
        out["ssl_context"] = tls_context(engines)
    return out
