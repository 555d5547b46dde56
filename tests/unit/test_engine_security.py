"""Engine security without engines: ACL rules, the Redis users file, identities, old configs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from msgctl import tls
from msgctl.infra import kafka_acls, redis
from runtime.adapters.cluster import engine_auth
from runtime.config import EnginesConfig, NodeConfig


def writes(principal: str) -> set[str]:
    return {name for who, kind, _, name, op in kafka_acls.rules(["us", "eu"])
            if who == principal and kind == "TOPIC" and op == "WRITE"}


def test_only_the_sequencer_writes_the_sequenced_log() -> None:
    assert writes("msgctl-sequencer") == {"msg.ingress", "msg.events", "msg.seq-state"}
    assert writes("msgctl-gateway") == {"msg.ingress", "msg.typing"}
    assert writes("msgctl-presence") == {"presence.events"}
    assert writes("msgctl-push") == set()


def test_every_region_s_mirrored_topics_are_readable_by_the_router() -> None:
    reads = {name for who, kind, _, name, op in kafka_acls.rules(["us", "eu"])
             if who == "msgctl-sequencer" and kind == "TOPIC" and op == "READ"}
    assert {"us.msg.events", "eu.msg.events", "us.msg.typing", "eu.msg.typing"} <= reads


def test_redis_users_file_turns_default_off_and_holds_no_password(tmp_path: Path) -> None:
    path = redis.write_acl(tmp_path, {"msgctl-gateway": "pw-g", "msgctl-admin": "pw-a"},
                           admin="msgctl-admin")
    text = path.read_text()
    assert text.splitlines()[0].startswith("user default off")
    assert "pw-g" not in text and hashlib.sha256(b"pw-g").hexdigest() in text
    assert "user msgctl-gateway on" in text and "-@dangerous" in text
    assert path.stat().st_mode & 0o077 == 0


def test_redis_tls_argv_turns_the_plain_port_off(tmp_path: Path) -> None:
    argv = redis.argv("redis-server", "127.0.0.1", 6380, tmp_path / "data",
                      (tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"),
                      tmp_path / "users.acl")
    assert argv[argv.index("--port") + 1] == "0"
    assert argv[argv.index("--tls-port") + 1] == "6380"
    assert argv[argv.index("--tls-auth-clients") + 1] == "yes"


def test_a_client_certificate_is_issued_again_under_a_new_ca(tmp_path: Path) -> None:
    files = tls.CaFiles(tmp_path / "ca")
    tls.init_ca(files)
    cert, _ = tls.client_cert(files, "msgctl-gateway", tmp_path / "out")
    first = cert.read_bytes()
    assert tls.client_cert(files, "msgctl-gateway", tmp_path / "out")[0].read_bytes() == first
    tls.init_ca(files, force=True)
    assert tls.client_cert(files, "msgctl-gateway", tmp_path / "out")[0].read_bytes() != first


def test_older_node_configs_still_load_and_mean_plain_engines() -> None:
    cfg = NodeConfig.from_dict({"region": "r", "host": "h", "port": 1, "data_dir": "d",
                                "log_dir": "l", "secret": "s", "backend": "cluster",
                                "engines": {"kafka_bootstrap": "h:9092",
                                            "redis_url": "redis://h:6379/0"}})
    assert engine_auth.kafka_settings(cfg.engines) == {}
    assert engine_auth.redis_kwargs(cfg.engines, cfg.engines.redis_url) == {}
    assert engine_auth.cassandra_kwargs(cfg.engines) == {}


def test_an_external_engine_trusts_its_own_ca() -> None:
    engines = EnginesConfig(tls_ca="/deployment/ca.pem", kafka_tls=True,
                            engine_ca={"kafka": "/theirs/ca.pem", "redis": ""})
    assert engine_auth.kafka_settings(engines)["ssl.ca.location"] == "/theirs/ca.pem"
    assert "ssl_ca_certs" not in engine_auth.redis_kwargs(engines, "rediss://h:6380/0")
