"""Client-side load for `msgctl bench`, run in worker processes apart from the measured one.

Each entry point is a plain function taking picklable arguments and returning a
dict of results, so the runner can start it with multiprocessing. Traffic is
open-loop: senders keep to the target rate whatever the latency, so a server
that falls behind shows it as latency, not as a politely lower rate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from msgctl import wire
from msgctl.wire import decode, encode

ACK_EVERY = 32  # receivers ack cumulatively, every this many messages, unless told
MAX_SAMPLES = 50_000


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _open(url: str, token: str, **kwargs: Any) -> ClientConnection:
    # no subprotocol offered: the bare relay (the ceiling) speaks none
    return await wire.connect(url, token, query_token=True, subprotocol=None, compression=None,
                              open_timeout=120, ping_interval=None, **kwargs)


# -- idle connections -------------------------------------------------------
async def _idle(url: str, tokens: list[str], hold: float, concurrency: int) -> dict[str, Any]:
    conns: list[ClientConnection] = []
    failures = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(token: str) -> None:
        nonlocal failures
        async with sem:
            try:
                ws = await _open(url, token, max_queue=4)
                await asyncio.wait_for(ws.recv(), 30)  # hello
                conns.append(ws)
            except Exception:
                failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(t) for t in tokens))
    opened_in = time.perf_counter() - t0
    await asyncio.sleep(hold)
    alive = sum(1 for ws in conns if ws.close_code is None)
    for ws in conns:
        ws.transport.abort()
    return {"opened": len(conns), "alive": alive, "failures": failures,
            "open_seconds": opened_in}


def idle_worker(url: str, tokens: list[str], hold: float, concurrency: int = 200
                ) -> dict[str, Any]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return _run(_idle(url, tokens, hold, concurrency))


# -- steady traffic ---------------------------------------------------------
@dataclass
class Pair:
    conv: str
    sender_token: str
    receiver_token: str
    receiver_user: str


async def _receiver(ws: ClientConnection, pair: Pair, lat: list[float], counts: dict[str, int],
                    window: tuple[float, float], ack_every: int) -> None:
    since_ack = 0
    last_seq = 0
    try:
        async for raw in ws:
            now = time.time()
            frame = decode(raw)
            if frame.get("t") != "msg":
                continue
            counts["delivered"] += 1
            sent_at = float(frame["body"])
            if window[0] <= sent_at <= window[1] and len(lat) < MAX_SAMPLES:
                lat.append((now - sent_at) * 1000)
            if frame["seq"] <= last_seq:
                counts["disorder"] += 1
            last_seq = frame["seq"]
            since_ack += 1
            if since_ack >= ack_every:
                since_ack = 0
                await ws.send(encode({"t": "ack", "conv": pair.conv, "seq": last_seq}))
    except ConnectionClosed:
        counts["closed"] += 1


async def _sender_reader(ws: ClientConnection, counts: dict[str, int],
                         sent_at: dict[str, float], sent_lat: list[float],
                         window: tuple[float, float]) -> None:
    try:
        async for raw in ws:
            now = time.time()
            frame = decode(raw)
            t = frame.get("t")
            if t == "sent":
                counts["sent"] += 1
                at = sent_at.pop(frame["cid"], None)
                if at is not None and window[0] <= at <= window[1] and len(sent_lat) < MAX_SAMPLES:
                    sent_lat.append((now - at) * 1000)
            elif t == "error":
                counts["errors"] += 1
    except ConnectionClosed:
        counts["closed"] += 1


async def _traffic(url: str, pairs: list[Pair], rate: float, warmup: float, duration: float,
                   relay: bool, receiver_url: str, ack_every: int) -> dict[str, Any]:
    counts = {"sent": 0, "delivered": 0, "errors": 0, "closed": 0, "disorder": 0, "offered": 0}
    lat: list[float] = []
    sent_lat: list[float] = []
    sent_at: dict[str, float] = {}
    senders: list[ClientConnection] = []
    receivers: list[ClientConnection] = []
    for p in pairs:
        r = await _open(receiver_url, p.receiver_token)
        s = await _open(url, p.sender_token)
        await r.recv()  # hello
        await s.recv()
        if not relay:  # the bare relay has no conversations to create
            await s.send(encode({"t": "create", "conv": p.conv, "members": [p.receiver_user],
                                 "id": "c"}))
            await wire.recv_until(s, "created")
        receivers.append(r)
        senders.append(s)
    start = time.time() + 0.2
    window = (start + warmup, start + warmup + duration)
    tasks = [asyncio.create_task(_receiver(r, p, lat, counts, window, ack_every))
             for r, p in zip(receivers, pairs, strict=True)]
    tasks += [asyncio.create_task(_sender_reader(s, counts, sent_at, sent_lat, window))
              for s in senders]
    await asyncio.sleep(max(0.0, start - time.time()))
    end = window[1]
    n = 0
    offered_in_window = 0
    cpu0 = time.process_time()
    while True:
        now = time.time()
        if now >= end:
            break
        due = int((now - start) * rate) - n
        for _ in range(max(0, due)):
            i = n % len(pairs)
            at = time.time()
            cid = f"b{n}"
            sent_at[cid] = at
            frame = encode({"t": "send", "conv": pairs[i].conv, "cid": cid,
                            "kind": "text", "body": f"{at:.6f}"})
            try:
                await senders[i].send(frame)
            except ConnectionClosed:
                counts["errors"] += 1
            if window[0] <= at <= window[1]:
                offered_in_window += 1
            n += 1
        # asleep until the next message is due (message n goes at start + (n + 1) / rate),
        # at most 1,000 times a second: a wake-up every millisecond whatever the rate
        # cost each client process ~4% of a core, taken from the server it measures
        # when they share a machine
        await asyncio.sleep(max(0.001, min(end, start + (n + 1) / rate) - time.time()))
    cpu_seconds = time.process_time() - cpu0
    counts["offered"] = n
    # let what is in flight land; what has not arrived by then counts as too slow (across
    # regions a message also crosses MirrorMaker 2)
    deadline = time.time() + (3.0 if receiver_url == url else 10.0)
    while counts["delivered"] < n and time.time() < deadline:
        await asyncio.sleep(0.02)
    for t in tasks:
        t.cancel()
    for ws in senders + receivers:
        ws.transport.abort()
    in_window = len(lat)
    return {"counts": counts, "latencies_ms": lat, "sent_latencies_ms": sent_lat,
            "offered_in_window": offered_in_window,
            "delivered_in_window": in_window, "window_s": duration,
            "cpu_seconds": cpu_seconds, "traffic_s": end - start}


def traffic_worker(url: str, pairs: list[Pair], rate: float, warmup: float, duration: float,
                   relay: bool = False, receiver_url: str = "", ack_every: int = ACK_EVERY
                   ) -> dict[str, Any]:
    """Open-loop 1:1 traffic at `rate`: senders on `url`, receivers on `receiver_url`
    (another region's gateway; "": the same), each receiver acking every `ack_every`
    messages (1: each one, as a client showing delivery ticks does)."""
    return _run(_traffic(url, pairs, rate, warmup, duration, relay, receiver_url or url,
                         ack_every))


# -- catch-up ---------------------------------------------------------------
async def _write_backlog(ws: ClientConnection, conv: str, cids: range, rate: float) -> None:
    """Send `cids` at `rate` per second and wait for every `sent`."""
    expected = len(cids)

    async def count_sent() -> None:
        got = 0
        async for raw in ws:
            frame = decode(raw)
            if frame.get("t") == "error":
                raise RuntimeError(f"backlog send refused: {frame}")
            if frame.get("t") == "sent":
                got += 1
                if got == expected:
                    return

    reader = asyncio.create_task(count_sent())
    t0 = time.monotonic()
    for n, i in enumerate(cids):
        await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        await ws.send(encode({"t": "send", "conv": conv, "cid": f"cu{i}", "kind": "text",
                              "body": "x" * 100}))
    await asyncio.wait_for(reader, 120)


async def _catch_up(url: str, conv: str, sender_tokens: list[str], receiver_token: str,
                    receiver_user: str, count: int) -> dict[str, Any]:
    r = await _open(url, receiver_token)
    await r.recv()
    await r.close()  # the device exists now: it is owed everything sent after this
    senders = [await _open(url, t) for t in sender_tokens]
    for s in senders:
        await s.recv()
    await senders[0].send(encode({"t": "create", "conv": conv,
                                  "members": [receiver_user], "id": "c"}))
    await wire.recv_until(senders[0], "created")
    k = len(senders)
    await asyncio.gather(*(_write_backlog(s, conv, range(i, count, k), 150.0)
                           for i, s in enumerate(senders)))
    for s in senders:
        await s.close()
    t0 = time.perf_counter()
    r = await _open(url, receiver_token, max_queue=None)
    got = 0
    async for raw in r:
        frame = decode(raw)
        if frame.get("t") == "msg":
            got += 1
            if got == count:
                break
    took = time.perf_counter() - t0
    await r.close()
    return {"messages": got, "seconds": took}


def catch_up_worker(url: str, conv: str, sender_tokens: list[str], receiver_token: str,
                    receiver_user: str, count: int) -> dict[str, Any]:
    return _run(_catch_up(url, conv, sender_tokens, receiver_token, receiver_user, count))

