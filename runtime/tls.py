"""The TLS a runtime serves: wss:// on the gateway port and https:// on the media endpoint.

msgctl writes the certificate chain and key paths into the node config (the topology's
`tls:`; see `msgctl ca`); a node without them serves plain ws:// and http://.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from runtime.config import NodeConfig


def server_context(cert: str | Path, key: str | Path | None,
                   client_ca: str | Path | None = None) -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer); with `client_ca`, clients must present a
    certificate that CA signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


def server_tls(config: NodeConfig) -> ssl.SSLContext | None:
    """A server context for the node's certificate, or None."""
    return server_context(config.tls_cert, config.tls_key) if config.tls_cert else None


def scheme(config: NodeConfig, plain: str) -> str:
    """`plain` ("ws" or "http") with an "s" when the node serves TLS."""
    return plain + "s" if config.tls_cert else plain
