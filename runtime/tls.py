"""The TLS a runtime serves: wss:// on the gateway port and https:// on the media endpoint.

msgctl writes the certificate chain and key paths into the node config (the topology's
`tls:`; see `msgctl ca`); a node without them serves plain ws:// and http://.
"""

from __future__ import annotations

import ssl

from runtime.config import NodeConfig


def server_tls(config: NodeConfig) -> ssl.SSLContext | None:
    """A server context for the node's certificate (TLS 1.2 or newer), or None."""
    if not config.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert, config.tls_key or None)
    return ctx


def scheme(config: NodeConfig, plain: str) -> str:
    """`plain` ("ws" or "http") with an "s" when the node serves TLS."""
    return plain + "s" if config.tls_cert else plain
