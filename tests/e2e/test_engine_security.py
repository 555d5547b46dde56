"""Engine security of the one-region cluster stack: TLS only, and each runtime its own rights.

Every engine refuses a plain-text client; each client presents a certificate
from the deployment CA and logs in as its own identity (docs/security.md). The
tests connect the way an intruder on the host would: without TLS, without a
login, as the default users, or with a real runtime identity doing what that
runtime must not do.
"""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from cassandra import AuthenticationFailed, Unauthorized
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from msgctl.infra import security
from runtime.adapters.cluster import engine_auth
from runtime.config import NodeConfig
from tests import engines
from tests.conftest import Deployment
from tests.wsclient import Client

pytestmark = pytest.mark.e2e


def role(dep: Deployment, program: str) -> NodeConfig:
    """The engine settings a runtime really runs with (its node config)."""
    return NodeConfig.load(dep.home / "config" / f"{program}.json")


def produce(config: dict[str, Any], topic: str) -> KafkaError | None:
    """One record to `topic`; the delivery error (None: written)."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 8000, "log_level": 0})
    producer.produce(topic, b"not-a-record", b"intruder",
                     on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(15)
    return errors[0] if errors else KafkaError(KafkaError._MSG_TIMED_OUT)


def kafka(dep: Deployment) -> str:
    return f"127.0.0.1:{dep.port + 20}"


def test_credentials_and_keys_are_private_to_the_user(cluster_deployment: Deployment) -> None:
    home = cluster_deployment.home
    private = [home / "credentials" / "engines.json", *(home / "tls").glob("*.key"),
               *(home / "engines").glob("*/conf/keystore.*"),
               home / "engines" / "redis.local" / "conf" / "users.acl"]
    assert len(private) >= 10, private
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((home / "credentials").stat().st_mode) == 0o700
    plan = (home / "run" / "plan.json").read_text()
    for password in json.loads((home / "credentials" / "engines.json").read_text())[
            "passwords"].values():
        assert password not in plan  # probes name the file, never a secret
        assert password not in (home / "engines" / "redis.local" / "conf" / "users.acl"
                                ).read_text()  # only its SHA-256


def test_kafka_refuses_plain_text_and_clients_without_a_certificate(
        cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    plain = AdminClient({"bootstrap.servers": kafka(dep), "log_level": 0})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
    no_cert = AdminClient({"bootstrap.servers": kafka(dep), "log_level": 0,
                           "security.protocol": "ssl",
                           "ssl.ca.location": engines.admin(dep.home).tls_ca})
    with pytest.raises(KafkaException):
        no_cert.list_topics(timeout=5)
    assert produce({"bootstrap.servers": kafka(dep)}, "msg.ingress") is not None


def test_only_the_sequencer_may_write_the_sequenced_log(cluster_deployment: Deployment) -> None:
    """A gateway's certificate is valid, but its principal may only write the ingress (and
    typing): not msg.events or msg.seq-state, which only the sequencer writes."""
    dep = cluster_deployment
    gateway = engine_auth.kafka_settings(role(dep, "gateway-1.local").engines)
    assert gateway["ssl.certificate.location"].endswith("client-msgctl-gateway.pem")
    for topic in ("msg.events", "msg.seq-state"):
        err = produce({"bootstrap.servers": kafka(dep), **gateway}, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    push = engine_auth.kafka_settings(role(dep, "push.local").engines)
    err = produce({"bootstrap.servers": kafka(dep), **push}, "msg.ingress")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def redis_port(dep: Deployment) -> int:
    return dep.port + 25


def test_redis_refuses_plain_text_and_the_default_user(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    port = redis_port(dep)
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=3, socket_connect_timeout=3).ping()
    tls = {k: v for k, v in engines.redis_kwargs(dep.home, port).items()
           if k.startswith("ssl")}
    url = engines.redis_url(dep.home, port)
    # TLS with a valid certificate, but no login: the default user is off
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url, **tls).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis.from_url(url, username="default", password="", **tls).ping()
    # a runtime's user reaches its keys and channels, nothing that reads or changes the server
    gw = role(dep, "gateway-1.local").engines
    client = redis.Redis.from_url(url, **engine_auth.redis_kwargs(gw, url))
    assert client.ping()
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SET", "x", "1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


def cql(dep: Deployment, **kwargs: Any) -> Cluster:
    return Cluster(["127.0.0.1"], port=dep.port + 22, protocol_version=5, connect_timeout=5,
                   control_connection_timeout=5, **kwargs)


def test_cassandra_refuses_plain_text_anonymous_and_the_default_superuser(
        cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    tls = engine_auth.tls_context(engines.admin(dep.home))
    attempts: list[dict[str, Any]] = [
        {},  # plain text
        {"ssl_context": tls},  # TLS, no login
        {"ssl_context": tls, "auth_provider": PlainTextAuthProvider("cassandra", "cassandra")},
    ]
    for kwargs in attempts:
        cluster = cql(dep, **kwargs)
        try:
            with pytest.raises(NoHostAvailable) as caught:
                cluster.connect()
        finally:
            cluster.shutdown()
        if "auth_provider" in kwargs:  # the default superuser no longer exists
            assert any(isinstance(e, AuthenticationFailed)
                       for e in caught.value.errors.values()), caught.value.errors


def test_a_runtime_role_reads_and_writes_but_cannot_drop_the_keyspace(
        cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    gw = role(dep, "gateway-1.local").engines
    assert gw.cassandra_user == "msgctl_gateway"
    cluster = cql(dep, **engine_auth.cassandra_kwargs(gw))
    try:
        session = cluster.connect()
        session.execute("SELECT conv FROM msgctl.conversations LIMIT 1")
        for statement in ("DROP KEYSPACE msgctl", "DROP TABLE msgctl.messages",
                          "CREATE ROLE intruder WITH SUPERUSER = true",
                          "SELECT salted_hash FROM system_auth.roles"):
            with pytest.raises(Unauthorized):
                session.execute(statement)
    finally:
        cluster.shutdown()


def test_s3_answers_only_https(cluster_deployment: Deployment) -> None:
    from msgctl.infra import s3 as s3_infra
    from runtime.media.s3 import s3_client

    dep = cluster_deployment
    conf = dep.home / "engines" / "s3.local" / "conf"
    identity, credential = s3_infra.credentials(conf)
    url, verify = engines.s3_endpoint(dep.home, dep.port + 26)
    assert url.startswith("https://")
    assert "Buckets" in s3_client(url, identity, credential, "us-east-1",
                                  verify=verify).list_buckets()
    plain = s3_client(url.replace("https://", "http://"), identity, credential, "us-east-1",
                      timeout=5)
    with pytest.raises(Exception):  # noqa: B017 - any failure: Jetty speaks only TLS there
        plain.list_buckets()


async def test_typing_reaches_the_other_gateway(cluster_deployment: Deployment) -> None:
    """Typing goes through `msg.typing`, which the gateways may write (msg.events they may
    not), and still reaches a member on the other gateway."""
    dep = cluster_deployment
    alice, bob = f"sec-a-{uuid.uuid4().hex[:8]}", f"sec-b-{uuid.uuid4().hex[:8]}"
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    b = await Client.open(dep.gateway_url(1), dep.token(bob))
    try:
        conv = (await a.create([bob]))["conv"]
        await a.send({"t": "typing", "conv": conv})
        frame = await b.wait_t("typing", timeout=10, conv=conv)
        assert frame["user"] == alice
    finally:
        await asyncio.gather(a.close(), b.close())


def test_an_identity_is_a_certificate_signed_by_the_deployment_ca(
        cluster_deployment: Deployment) -> None:
    sec = security.load(cluster_deployment.home)
    assert sec is not None
    cert, _ = sec.identity("gateway")
    from cryptography import x509

    loaded = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    assert loaded.subject.rfc4514_string() == "CN=msgctl-gateway,O=msgctl"
    loaded.verify_directly_issued_by(x509.load_pem_x509_certificate(sec.ca.read_bytes()))
