"""Engine security of a cluster deployment: certificates, identities and passwords.

With the topology's `tls:` on (the default), every provisioned engine serves TLS
only, with a certificate the deployment CA signs (`msgctl.tls`), and asks each
client for a certificate from that CA. Each runtime role has its own identity:
a client certificate (CN ``msgctl-<role>``: its Kafka principal), a Redis ACL
user and a Cassandra role, each with a password generated once per deployment.
msgctl's own clients (probes, replication lag, tests) use the ``msgctl-admin``
identity; MirrorMaker 2 uses ``msgctl-mirror``. docs/security.md says who may
do what.

Files: certificates in ``<home>/tls/`` (``client-<identity>.pem/.key``,
``server-<engine>-<region>.pem/.key``), passwords in
``<home>/credentials/engines.json``; all 0600, made with `write_private`.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgctl import tls
from msgctl.errors import UsageError
from msgctl.home import private_dir, write_private
from runtime.config import EnginesConfig

ROLES = ("sequencer", "presence", "push", "gateway")
ADMIN, MIRROR = "admin", "mirror"


def principal(identity: str) -> str:
    """The certificate CN of an identity, which Kafka takes as its principal's name."""
    return f"msgctl-{identity}"


def cassandra_role(identity: str) -> str:
    return f"msgctl_{identity}"


def redis_user(identity: str) -> str:
    return f"msgctl-{identity}"


def kafka_super_users(region: str) -> list[str]:
    """Principals a region's Kafka lets do anything: the broker itself (its connection to
    its controller), msgctl (probes, ACLs, lag) and MirrorMaker 2."""
    return [f"kafka-{region}", principal(ADMIN), principal(MIRROR)]


@dataclass(frozen=True)
class EngineSecurity:
    """Where one deployment's engine certificates and passwords live."""

    home_root: Path
    ca_dir: Path  # the CA that signs them (the topology's `tls.ca`, else <home>/tls)

    @property
    def ca(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def tls_dir(self) -> Path:
        return self.home_root / "tls"

    @property
    def credentials(self) -> Path:
        return self.home_root / "credentials" / "engines.json"

    def identity(self, who: str) -> tuple[Path, Path]:
        """The client certificate and key of `who` (a role, ADMIN or MIRROR)."""
        name = f"client-{principal(who)}"
        return self.tls_dir / f"{name}.pem", self.tls_dir / f"{name}.key"

    def server(self, engine: str, region: str) -> tuple[Path, Path]:
        return tls.CaFiles(self.tls_dir).server(f"{engine}-{region}")

    def passwords(self) -> dict[str, str]:
        """Identity -> password (the same for its Redis user and Cassandra role)."""
        try:
            raw = json.loads(self.credentials.read_text())
            return {str(k): str(v) for k, v in raw["passwords"].items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return {}

    def client(self, who: str) -> dict[str, str]:
        """Paths of a client's TLS material (what probe specs and deployment.json carry;
        never a secret itself)."""
        cert, key = self.identity(who)
        return {"ca": str(self.ca), "cert": str(cert), "key": str(key),
                "credentials": str(self.credentials), "identity": who}


def of(topo: Any, home_root: Path) -> EngineSecurity | None:
    """The engine security of a topology (nothing made); None when it turns TLS off."""
    if topo.backend != "cluster" or not topo.tls.enabled:
        return None
    return EngineSecurity(home_root, Path(topo.tls.ca) if topo.tls.ca else home_root / "tls")


def write_keystore(conf: Path, cert: Path, key: Path) -> Path:
    """An engine's key and certificate in one PEM file (conf/keystore.pem, 0600), the form
    Kafka's PEM key store and Cassandra's PEMBasedSslContextFactory read."""
    path = conf / "keystore.pem"
    write_private(path, key.read_text() + cert.read_text())
    return path


def ensure(topo: Any, home_root: Path) -> EngineSecurity | None:
    """Make what the engines of a cluster topology need (CA, server and client
    certificates, passwords); None when the topology turns TLS off."""
    sec = of(topo, home_root)
    if sec is None:
        return None
    files = tls.CaFiles(sec.ca_dir)
    try:
        tls.init_ca(files, topo.name)
        for who in (*ROLES, ADMIN, MIRROR):
            tls.client_cert(files, principal(who), sec.tls_dir)
        for region in topo.regions:
            for engine, spec in region.engines.items():
                if spec.provisioned:
                    tls.server_cert(files, f"{engine}-{region.name}", region.tls_names(),
                                    out_dir=sec.tls_dir)
    except (tls.TlsError, OSError, ValueError) as exc:
        raise UsageError(f"{Path(topo.source).name}: tls: {exc}") from None
    _ensure_passwords(sec)
    return sec


def _ensure_passwords(sec: EngineSecurity) -> None:
    have = sec.passwords()
    wanted = {who: have.get(who) or secrets.token_urlsafe(24) for who in (*ROLES, ADMIN)}
    if wanted != have:
        private_dir(sec.credentials.parent)
        write_private(sec.credentials, json.dumps({"passwords": wanted}, indent=2))


def load(home_root: Path) -> EngineSecurity | None:
    """The engine security of the deployment in `home_root` (from its deployment.json),
    None when its engines run without TLS."""
    try:
        info = json.loads((home_root / "deployment.json").read_text()).get("engine_security")
    except (OSError, ValueError):
        return None
    if not info:
        return None
    return EngineSecurity(home_root, Path(info["ca"]).parent)


def describe(sec: EngineSecurity | None, topo: Any) -> dict[str, Any] | None:
    """What deployment.json records (`engine_security`): the CA and which engines msgctl
    provisioned (those speak TLS and want msgctl's identity)."""
    if sec is None:
        return None
    engines = sorted({e for r in topo.regions for e, s in r.engines.items() if s.provisioned})
    return {"ca": str(sec.ca), "engines": engines, "credentials": str(sec.credentials)}


def for_role(engines: EnginesConfig, sec: EngineSecurity | None, role: str,
             specs: dict[str, Any]) -> EnginesConfig:
    """`engines` with the identity of runtime `role` (its certificate and passwords) for
    the provisioned engines of `specs`."""
    if sec is None:
        return engines
    cert, key = sec.identity(role)
    password = sec.passwords()[role]
    provisioned = {e for e, s in specs.items() if s.provisioned}
    out: dict[str, Any] = {"tls_ca": str(sec.ca), "tls_cert": str(cert), "tls_key": str(key)}
    if "kafka" in provisioned:
        out["kafka_tls"] = True
    if "cassandra" in provisioned:
        out |= {"cassandra_tls": True, "cassandra_user": cassandra_role(role),
                "cassandra_password": password}
    if "redis" in provisioned:
        out |= {"redis_user": redis_user(role), "redis_password": password}
    return dataclasses.replace(engines, **out)


def client_engines(client: dict[str, Any] | None,
                   engines: tuple[str, ...] = ("kafka", "cassandra", "redis", "s3")
                   ) -> EnginesConfig:
    """The `EnginesConfig` of a `EngineSecurity.client` dict (a probe spec's `security`):
    its certificate paths, and its password read from the credentials file; empty for
    None. `engines`: those that speak TLS."""
    if not client:
        return EnginesConfig()
    who = str(client.get("identity", ""))
    try:
        password = str(json.loads(Path(client["credentials"]).read_text())["passwords"][who])
    except (OSError, ValueError, KeyError, TypeError):
        password = ""  # refused by the engine: the probe's answer says so
    out = EnginesConfig(tls_ca=client["ca"], tls_cert=client["cert"], tls_key=client["key"])
    if "kafka" in engines:
        out.kafka_tls = True
    if "cassandra" in engines:
        out.cassandra_tls = True
        out.cassandra_user, out.cassandra_password = cassandra_role(who), password
    if "redis" in engines:
        out.redis_user, out.redis_password = redis_user(who), password
    return out


def kafka_client(sec: EngineSecurity) -> dict[str, Any]:
    """librdkafka settings for msgctl's own clients of the deployment's Kafkas."""
    from runtime.adapters.cluster.engine_auth import kafka_settings

    return kafka_settings(client_engines(sec.client(ADMIN), ("kafka",)))


def admin_engines(home_root: Path) -> EnginesConfig:
    """msgctl's own identity (ADMIN) for its clients of the engines of the deployment in
    `home_root` (replication lag, tests); empty when its engines run without TLS."""
    sec = load(home_root)
    if sec is None:
        return EnginesConfig()
    info = json.loads((home_root / "deployment.json").read_text())["engine_security"]
    return client_engines(sec.client(ADMIN), tuple(info.get("engines", ())))
