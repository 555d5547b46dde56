"""Reading a runtime's Prometheus ``/metrics`` text: fetch it, pick one sample out."""

from __future__ import annotations

import ssl
import urllib.request


def scrape(host: str, port: int, timeout: float = 1.0, *,
           tls: ssl.SSLContext | None = None) -> str | None:
    """The ``/metrics`` text of the runtime at host:port (over https with `tls`); None when
    it does not answer."""
    url = f"{'https' if tls else 'http'}://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls) as resp:
            return resp.read().decode()
    except (OSError, ValueError):
        return None


def sample(text: str, name: str) -> float | None:
    """The value of the unlabelled sample `name` (the last one if repeated), or None."""
    value = None
    prefix = f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            value = float(line.split()[1])
    return value
