"""Throwaway credentials for the stand-ins: an FCM service account and an APNs .p8 key."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def _pems(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def rsa_pems() -> tuple[bytes, bytes]:
    """(private PKCS#8 PEM, public PEM) of a fresh RSA-2048 key (service accounts use these)."""
    return _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_pems() -> tuple[bytes, bytes]:
    """(private PKCS#8 PEM, as in an AuthKey_*.p8, public PEM) of a fresh P-256 key."""
    return _pems(ec.generate_private_key(ec.SECP256R1()))


def write_service_account(path: Path, private_pem: bytes, *, project: str, client_email: str,
                          token_uri: str, key_id: str = "k1") -> Path:
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": key_id,
        "private_key": private_pem.decode(), "client_email": client_email,
        "client_id": "1234567890", "token_uri": token_uri,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth"}))
    path.chmod(0o600)
    return path
