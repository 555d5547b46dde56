"""Steady-state probes: is the deployment healthy enough to start a drill, or healthy again?

Four checks, each ``{name, ok, detail}``: every program RUNNING; every gateway
answers ``/readyz``; every replication link flowing with its lag under the
bound (several regions); and in each region, the p99 of send -> sent over a
few sends in a conversation homed there under the bound.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aiohttp
from websockets.exceptions import WebSocketException

from chaos.drill import SteadyState
from chaos.target import Target
from msgctl import wire
from msgctl.infra import replication


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _programs(target: Target) -> dict[str, Any]:
    bad = [f"{p['name']} {p['state']}" for p in target.programs()
           if p["state"] != "RUNNING" or any(v not in ("ready", "-")
                                             for v in (p.get("runtimes") or {}).values())]
    return {"name": "programs running", "ok": not bad,
            "detail": ", ".join(bad) if bad else f"{len(target.programs())} RUNNING"}


async def _gateways(target: Target) -> dict[str, Any]:
    bad = []
    async with target.http() as session:
        for region in target.regions:
            for base in region.http_urls:
                try:
                    async with session.get(f"{base}/readyz",
                                           timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        if resp.status != 200:
                            bad.append(f"{base} {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    bad.append(f"{base} {type(exc).__name__}")
    return {"name": "gateways ready", "ok": not bad, "detail": ", ".join(bad) or "all ready"}


async def _replication(target: Target, bound_ms: int) -> dict[str, Any] | None:
    regions = target.deployment_regions()
    if target.backend != "cluster" or len(regions) < 2:
        return None
    links = await asyncio.to_thread(replication.links, regions)
    bad = [f"{x.source}->{x.target} " + ("STALLED" if x.stalled else f"lag {x.lag_ms} ms")
           for x in links if x.stalled or (x.lag_ms or 0) > bound_ms]
    return {"name": f"replication lag under {bound_ms} ms", "ok": not bad,
            "detail": ", ".join(bad) or ", ".join(f"{x.source}->{x.target} {x.lag_ms} ms"
                                                  for x in links)}


async def _send_latency(target: Target, sends: int, bound_ms: int) -> dict[str, Any] | None:
    if sends <= 0:
        return None
    tag = secrets.token_hex(3)
    details, ok = [], True
    for region in target.regions:
        user = f"probe-{tag}-{region.name}"
        url = region.ws_urls[0]
        try:
            async with await wire.connect(url, target.token(user, "probe"),
                                          open_timeout=10) as ws:
                await asyncio.wait_for(ws.recv(), 15)  # hello
                conv = await wire.call(ws, {"t": "create", "members": [f"{user}-peer"],
                                            "id": "c"}, 15)
                if conv.get("t") != "created":
                    raise RuntimeError(f"create answered {conv}")
                took = []
                for i in range(sends):
                    t0 = time.monotonic()
                    reply = await wire.call(ws, {"t": "send", "conv": conv["conv"],
                                                 "cid": f"p{i}", "kind": "text",
                                                 "body": "probe", "id": f"s{i}"}, 15)
                    if reply.get("t") != "sent":
                        raise RuntimeError(f"send answered {reply}")
                    took.append((time.monotonic() - t0) * 1000)
        except (OSError, TimeoutError, WebSocketException, RuntimeError, ValueError) as exc:
            ok = False
            details.append(f"{region.name}: {type(exc).__name__} {exc}"[:160])
            continue
        p99 = _p99(took)
        ok = ok and p99 <= bound_ms
        details.append(f"{region.name} p99 {p99:.0f} ms")
    return {"name": f"send->sent p99 under {bound_ms} ms", "ok": ok,
            "detail": ", ".join(details)}


async def probe(target: Target, steady: SteadyState) -> dict[str, Any]:
    """One pass of every check."""
    checks = [await _programs(target), await _gateways(target)]
    for extra in (await _replication(target, steady.max_lag_ms),
                  await _send_latency(target, steady.probe_sends, steady.max_send_p99_ms)):
        if extra is not None:
            checks.append(extra)
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "at": time.time()}


async def until_steady(target: Target, steady: SteadyState, within: float) -> dict[str, Any]:
    """Probe until every check passes or `within` seconds ran out; the last pass, with
    how long it took."""
    t0 = time.monotonic()
    while True:
        result = await probe(target, steady)
        result["waited_s"] = round(time.monotonic() - t0, 1)
        if result["ok"] or time.monotonic() - t0 > within:
            return result
        await asyncio.sleep(2)
