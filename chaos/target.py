"""The deployment a drill runs against, as its home describes it, and how to reach it.

Read from the home's ``deployment.json``, ``run/plan.json`` and ``run/state.json``:
the regions with their gateways (WebSocket and REST), the backend, what chaos
support the supervisor has, and a way to issue tokens with the deployment's secret.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from msgctl import wire
from msgctl.errors import EXIT_NOT_RUNNING, MsgctlError
from msgctl.home import Home
from msgctl.supervisor import client
from msgctl.tls import trust
from runtime import auth

READ_PAGE = 1000


@dataclass(frozen=True)
class Region:
    name: str
    host: str
    ws_urls: list[str]

    @property
    def http_urls(self) -> list[str]:
        return [("https://" + u[6:] if u.startswith("wss://") else
                 u.replace("ws://", "http://", 1)).removesuffix("/v1/ws") for u in self.ws_urls]


@dataclass
class Target:
    home: Home
    name: str
    backend: str
    regions: list[Region]
    secret: str
    tls: ssl.SSLContext | None = None  # what reaching the gateways trusts (TLS deployments)

    def http(self) -> aiohttp.ClientSession:
        """A session for the gateways' REST and probes (trusting the deployment's CA)."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.tls or True))

    @classmethod
    def of(cls, home: Home) -> Target:
        if home.supervisor_pid() is None:
            raise MsgctlError(f"nothing is running under {home.root} (run 'msgctl up')",
                              EXIT_NOT_RUNNING)
        dep = home.deployment() or {}
        if dep.get("scope") == "engines":
            raise MsgctlError("only the engines run here ('msgctl infra start'); a drill needs "
                              "the runtimes: 'msgctl up'")
        regions = [Region(r["name"], r["host"], list(r.get("gateway_urls") or [r["ws_url"]]))
                   for r in dep.get("regions", [])]
        tls = trust(dep)
        wire.set_trust(tls)  # the drill's devices connect through msgctl.wire
        return cls(home, str(dep.get("name", "?")), str(dep.get("backend", "embedded")),
                   regions, home.secret(), tls)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.regions]

    def region(self, name: str) -> Region:
        return next(r for r in self.regions if r.name == name)

    def token(self, user: str, device: str, ttl: int = 6 * 3600) -> str:
        return auth.issue(self.secret, user, device, ttl)

    def urls_for(self, region: str, index: int = 0) -> list[tuple[str, str]]:
        """A device's gateways: its region's first (rotated by `index`, so devices spread
        over them as behind a load balancer), then every other region's."""
        urls = self.region(region).ws_urls
        k = index % len(urls)
        own = [(region, u) for u in urls[k:] + urls[:k]]
        return own + [(r.name, u) for r in self.regions if r.name != region for u in r.ws_urls]

    def chaos_support(self) -> dict[str, Any]:
        try:
            reply = client.command(self.home, "chaos_list", timeout=10)
        except MsgctlError:
            return {"network": "off (no answer from the supervisor)", "link_proxy": "off"}
        return {"network": reply.get("network", "off"), "link_proxy": reply.get("link_proxy",
                                                                                "off")}

    def programs(self) -> list[dict[str, Any]]:
        return (client.read_state(self.home) or {}).get("programs", [])

    def deployment_regions(self) -> list[dict[str, Any]]:
        return list((self.home.deployment() or {}).get("regions", []))


def _reduced(m: dict[str, Any]) -> dict[str, Any]:
    """What the checker reads of a stored message (and the seq a failover moved it from)."""
    out = {"seq": int(m["seq"]), "prev": int(m["prev"]), "cid": m.get("cid"),
           "from": f"{m.get('from')}/{m.get('from_device')}"}
    if m.get("moved_from") is not None:
        out["moved_from"] = int(m["moved_from"])
    return out


async def read_conversation(session: aiohttp.ClientSession, region: Region, conv: str,
                            token: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every stored message of `conv` as `region` serves it (REST history, paged); raises
    ConnectionError when no gateway of the region answers."""
    last: str = "no gateway"
    for base in region.http_urls:
        msgs: list[dict[str, Any]] = []
        after = 0
        throttled = 0
        try:
            while True:
                async with session.get(
                        f"{base}/v1/conversations/{conv}/messages",
                        params={"after": str(after), "limit": str(READ_PAGE)},
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    if resp.status == 429 and throttled < 10:  # the REST rate per user
                        throttled += 1
                        await asyncio.sleep(min(5.0, float(resp.headers.get("Retry-After",
                                                                            "1"))))
                        continue
                    if resp.status != 200:
                        raise ConnectionError(f"{base}: HTTP {resp.status}")
                    body = json.loads(await resp.text())
                page = body.get("msgs") or []
                msgs += [_reduced(m) for m in page]
                if not body.get("more") or not page:
                    return msgs
                after = int(page[-1]["seq"])
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError) as exc:
            last = str(exc) or type(exc).__name__
            continue
    raise ConnectionError(last)


async def gather_limited(coros: list[Any], limit: int = 16) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)
