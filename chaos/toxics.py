"""Link faults as Toxiproxy toxics: which toxics a fault means, and the HTTP API to add them.

A link fault between regions A and B puts the same toxics on every proxy that
carries A's connections to B (in A's Toxiproxy) and B's to A (in B's), on both
streams, so each direction of the link gets the latency, jitter and bandwidth
asked for (a round trip through it takes twice the latency). ``reset`` resets
every connection that sends data; ``blackhole`` swallows data and keeps the
connection open, as a silent network does.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

STREAMS = ("upstream", "downstream")


class ToxiproxyError(RuntimeError):
    """The proxy did not take a change."""


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    stream: str
    attributes: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "stream": self.stream, "toxicity": 1.0,
                "attributes": self.attributes}


def toxics(fault_id: str, *, latency_ms: int = 0, jitter_ms: int = 0,
           bandwidth_kbs: int = 0, reset: bool = False, blackhole: bool = False) -> list[Toxic]:
    """The toxics of one link fault (each name starts with the fault id)."""
    out: list[Toxic] = []
    for stream in STREAMS:
        if latency_ms or jitter_ms:
            out.append(Toxic(f"{fault_id}-latency-{stream}", "latency", stream,
                             {"latency": latency_ms, "jitter": jitter_ms}))
        if bandwidth_kbs:
            out.append(Toxic(f"{fault_id}-bandwidth-{stream}", "bandwidth", stream,
                             {"rate": bandwidth_kbs}))
    if blackhole:
        for stream in STREAMS:
            out.append(Toxic(f"{fault_id}-blackhole-{stream}", "timeout", stream,
                             {"timeout": 0}))
    if reset:
        out.append(Toxic(f"{fault_id}-reset", "reset_peer", "upstream", {"timeout": 0}))
    return out


def _call(method: str, url: str, body: dict[str, Any] | None = None,
          timeout: float = 3.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise ToxiproxyError(f"{method} {url}: {exc.code} {detail}") from None
    except (OSError, TimeoutError) as exc:
        raise ToxiproxyError(f"{method} {url}: {exc}") from None
    return json.loads(raw) if raw.strip() else None


def add(api: str, proxy: str, toxic: Toxic) -> None:
    _call("POST", f"{api}/proxies/{proxy}/toxics", toxic.body())


def remove(api: str, proxy: str, name: str) -> bool:
    """Delete a toxic; False when it (or the proxy) is already gone."""
    try:
        _call("DELETE", f"{api}/proxies/{proxy}/toxics/{name}")
    except ToxiproxyError as exc:
        if ": 404" in str(exc):
            return False
        raise
    return True


def listing(api: str) -> dict[str, Any]:
    """Every proxy with its toxics, as the API returns them."""
    out = _call("GET", f"{api}/proxies")
    return out if isinstance(out, dict) else {}
