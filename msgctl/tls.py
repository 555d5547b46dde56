"""The deployment's certificate authority and the TLS contexts built from it.

`msgctl ca init` (and `msgctl up` when a topology turns TLS on) makes a CA
under `<home>/tls/`: `ca.pem` (the certificate clients trust), `ca.key`, and
an operator client certificate (`client.pem`, `client.key`) for the places
that ask for one. Each endpoint that serves TLS gets `server-<name>.pem/.key`
signed by that CA, with the addresses clients use as subject alternative
names; a certificate is issued again when its names change or it is within
30 days of expiry. Every file is 0600 and the directory 0700: the keys are the
deployment's identity.

Keys are ECDSA P-256 (fast handshakes, small certificates); the CA lives ten
years, leaf certificates one year.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from msgctl.home import private_dir, write_private
from runtime.tls import server_context

__all__ = ["CaFiles", "TlsError", "ca_files", "client_cert", "client_context", "describe",
           "init_ca", "server_cert", "server_context", "trust", "trust_children", "trust_file"]

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_DAYS = 30


class TlsError(Exception):
    """A CA or certificate problem a user can act on (one line)."""


@dataclass(frozen=True)
class CaFiles:
    """Where a deployment's CA and operator client certificate live."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def server(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"server-{name}.pem", self.dir / f"server-{name}.key"

    def exists(self) -> bool:
        return self.ca.exists() and self.ca_key.exists()

    def to_json(self) -> dict[str, str]:
        return {"ca": str(self.ca), "client_cert": str(self.client_cert),
                "client_key": str(self.client_key)}


def ca_files(home_root: Path) -> CaFiles:
    return CaFiles(home_root / "tls")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _load_ca(files: CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the CA in {files.dir}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{files.ca_key}: not an EC private key")
    return cert, key


def init_ca(files: CaFiles, name: str = "msgctl", *, force: bool = False) -> bool:
    """Make the CA and the operator client certificate unless they exist (or `force`).
    Returns True when a new CA was made."""
    if files.exists() and not force:
        if not files.client_cert.exists():
            _issue_client(files)
        return False
    private_dir(files.dir)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "msgctl"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    write_private(files.ca_key, _key_pem(key))
    write_private(files.ca, _cert_pem(cert))
    for stale in files.dir.glob("server-*"):  # signed by the old CA
        stale.unlink()
    _issue_client(files)
    return True


def _leaf(files: CaFiles, common_name: str, sans: list[str], client: bool
          ) -> tuple[str, str]:
    ca_cert, ca_key = _load_ca(files)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "msgctl"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS),
                                    ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.CLIENT_AUTH] if client else
                   [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                   critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_general_name(s) for s in sans]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _issue_client(files: CaFiles) -> None:
    cert, key = _leaf(files, "operator", [], client=True)
    write_private(files.client_key, key)
    write_private(files.client_cert, cert)


def server_cert(files: CaFiles, name: str, sans: list[str],
                out_dir: Path | None = None) -> tuple[Path, Path]:
    """The certificate and key of endpoint `name` for `sans` (issued if missing, for other
    names, or near expiry), in `out_dir` (default: next to the CA; a CA several
    deployments share keeps each one's certificates in its own home)."""
    cert_path, key_path = (files.server(name) if out_dir is None else
                           CaFiles(out_dir).server(name))
    if out_dir is not None:
        private_dir(out_dir)
    wanted = sorted(set(sans))
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            have = sorted(str(n.value) for n in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
            if (have == sorted(str(_general_name(s).value) for s in wanted)
                    and _current(files, cert)):
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass  # unreadable or without names: issue a new one
    pem, key = _leaf(files, name, wanted, client=False)
    write_private(key_path, key)
    write_private(cert_path, pem)
    return cert_path, key_path


def client_cert(files: CaFiles, name: str, out_dir: Path) -> tuple[Path, Path]:
    """A client certificate whose subject CN is `name` (an engine identity: Kafka's principal,
    the name Redis and Cassandra see), in `out_dir` as client-<name>.pem/.key; issued if
    missing, near expiry or signed by another CA (`ca init --force`)."""
    private_dir(out_dir)
    cert_path, key_path = out_dir / f"client-{name}.pem", out_dir / f"client-{name}.key"
    if cert_path.exists() and key_path.exists():
        try:
            if _current(files, x509.load_pem_x509_certificate(cert_path.read_bytes())):
                return cert_path, key_path
        except ValueError:
            pass  # unreadable: issue a new one
    pem, key = _leaf(files, name, [], client=True)
    write_private(key_path, key)
    write_private(cert_path, pem)
    return cert_path, key_path


def _current(files: CaFiles, cert: x509.Certificate) -> bool:
    """`cert` is signed by the CA in `files` and not near its expiry."""
    ca_cert, _ = _load_ca(files)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_DAYS)


def describe(files: CaFiles) -> dict[str, Any]:
    """What `msgctl ca show` prints: the paths, and the CA's name, fingerprint and expiry."""
    cert, _ = _load_ca(files)
    return {**files.to_json(), "subject": cert.subject.rfc4514_string(),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(":"),
            "expires": cert.not_valid_after_utc.isoformat(timespec="seconds")}


def client_context(ca: Path | None, cert: Path | None = None,
                   key: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts `ca` (or the system's roots when None), optionally
    presenting a client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def trust(deployment: dict[str, Any]) -> ssl.SSLContext | None:
    """What msgctl's own clients (status, bench, load, drills, `media`) trust to reach the
    deployment described by `deployment.json`: its CA, or the system's roots when the
    operator supplied the certificate; None when the deployment serves no TLS."""
    info = deployment.get("tls") or {}
    if not info.get("enabled"):
        return None
    ca = info.get("ca") or ""
    return client_context(Path(ca) if ca else None)


def trust_file(deployment: dict[str, Any]) -> str:
    """The CA file of `trust` ("" for the system's roots or no TLS), for processes that take
    a path (`SSL_CERT_FILE` of load workers)."""
    info = deployment.get("tls") or {}
    return str(info.get("ca") or "") if info.get("enabled") else ""


def trust_children(deployment: dict[str, Any]) -> None:
    """Make this process's default TLS contexts, and those of the workers it starts (bench
    and load processes), trust the deployment's CA (`SSL_CERT_FILE`)."""
    ca = trust_file(deployment)
    if ca:
        os.environ["SSL_CERT_FILE"] = ca
