"""S3Proxy (``org.gaul:s3proxy`` from Maven Central): the S3 API over jclouds' filesystem store.

One JVM per region serves the media bucket of the cluster family from
``<home>/engines/s3.<region>/data``. It checks AWS v2/v4 signatures against an
identity and credential msgctl generates once per deployment and keeps in
``conf/credentials.json`` (mode 0600); the gateways read them from there.
Caveat: S3Proxy 2.6.0 checks only a presigned POST's signature (not its key, content
type, size range or expiry), so no client is ever given one: the gateways take uploads
on their media ports and write the objects themselves (runtime.media.s3).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from msgctl.home import write_private

MAIN_CLASS = "org.gaul.s3proxy.Main"
BUCKET = "msgctl-media"
REGION = "us-east-1"

LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>[%d] %level %msg \\(%logger{20}\\)%n</pattern></encoder>
  </appender>
  <logger name="org.gaul.shaded.org.eclipse.jetty" level="WARN"/>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def credentials(conf: Path) -> tuple[str, str]:
    """The (identity, credential) of this S3Proxy, made on first use and kept."""
    path = conf / "credentials.json"
    try:
        raw = json.loads(path.read_text())
        return str(raw["identity"]), str(raw["credential"])
    except (OSError, ValueError, KeyError):
        pass
    conf.mkdir(parents=True, exist_ok=True)
    identity, credential = "msgctl" + secrets.token_hex(8), secrets.token_hex(24)
    tmp = path.with_name(f".credentials.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"identity": identity, "credential": credential}, fh)
    os.replace(tmp, path)
    return identity, credential


def write_keystore(conf: Path, cert: Path, key: Path) -> tuple[Path, str]:
    """The server's key and certificate as a PKCS#12 key store for Jetty, under a password
    made now (it is written again with each config)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12

    password = secrets.token_urlsafe(24)
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):  # what msgctl.tls makes
        raise ValueError(f"{key}: not an EC private key")
    blob = pkcs12.serialize_key_and_certificates(
        b"s3proxy", private, x509.load_pem_x509_certificate(cert.read_bytes()), None,
        serialization.BestAvailableEncryption(password.encode()))
    path = conf / "keystore.p12"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
    return path, password


def write_config(conf: Path, data: Path, host: str, port: int,
                 tls: tuple[Path, Path] | None = None) -> Path:
    """s3proxy.properties and logback.xml; returns the properties file. `tls`: the
    server's (certificate, key): then https only."""
    conf.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    identity, credential = credentials(conf)
    if tls is None:
        listen = {"s3proxy.endpoint": f"http://{host}:{port}"}
    else:
        keystore, password = write_keystore(conf, *tls)
        listen = {"s3proxy.secure-endpoint": f"https://{host}:{port}",
                  "s3proxy.keystore-path": str(keystore),
                  "s3proxy.keystore-password": password}
    props = {
        **listen,
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": identity,
        "s3proxy.credential": credential,
        "jclouds.provider": "filesystem",
        "jclouds.filesystem.basedir": str(data),
    }
    path = conf / "s3proxy.properties"
    # it holds the credential: 0600 from the start, never readable by others in between
    write_private(path, "".join(f"{k}={v}\n" for k, v in props.items()))
    (conf / "logback.xml").write_text(LOGBACK)
    return path


def argv(jvm: str, lib: Path, conf: Path, heap_mb: int) -> list[str]:
    return [jvm, f"-Xmx{heap_mb}m", f"-Dlogback.configurationFile={conf / 'logback.xml'}",
            "-cp", f"{lib}/*", MAIN_CLASS, "--properties", str(conf / "s3proxy.properties")]
