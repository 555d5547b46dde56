"""Reading a runtime's Prometheus ``/metrics`` text: fetch it, pick one sample out."""

from __future__ import annotations

import urllib.request


def scrape(host: str, port: int, timeout: float = 1.0) -> str | None:
    """The ``/metrics`` text of the runtime at host:port; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
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
