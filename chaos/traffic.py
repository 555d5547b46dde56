"""A drill's clients: devices that behave as real apps do, and record everything they see.

Each device holds one WebSocket session to a gateway of its region (falling
back to the other gateways when its own cannot be reached), reconnects with
backoff when the session drops (the server resumes it after its last ack),
acknowledges what it receives, and keeps an outbox per conversation: one send
in flight at a time, retried with the same cid after a timeout, an
``unavailable`` or a lost connection, until it is acknowledged or the drill
gives up. Every send, outcome, delivery and connection goes into the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from chaos.history import History
from msgctl import wire

RETRYABLE = ("unavailable", "rate_limited", "internal")
OUTBOX_LIMIT = 200  # queued sends per (device, conversation); more are skipped
PING_EVERY = 10.0
ACK_EVERY = 0.1


@dataclass
class Pending:
    conv: str
    cid: str
    body: str
    queued: float  # history time the user pressed send
    attempts: int = 0


@dataclass
class Outbox:
    queue: deque[Pending] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Device:
    """One user's phone, connected to `urls` (its own region's gateways first)."""

    def __init__(self, user: str, device: str, region: str, urls: list[tuple[str, str]],
                 token: str, history: History, send_timeout: float = 5.0) -> None:
        self.user = user
        self.device = device
        self.process = f"{user}/{device}"
        self.home_region = region
        self.urls = urls  # (region, ws url)
        self.token = token
        self.history = history
        self.send_timeout = send_timeout
        self.ws: ClientConnection | None = None
        self.region = region  # of the gateway in use
        self.url = ""
        self.conn = 0
        self.connected = asyncio.Event()
        self.hello = asyncio.Event()  # the first session opened
        self.closing = False
        self.accepting = True  # new sends (False once the traffic stops)
        self.outboxes: dict[str, Outbox] = {}
        self.replies = wire.Replies()  # requests in flight, by id
        self.seen: dict[str, int] = {}  # conv -> highest seq delivered
        self.acked: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.acked_count = 0
        self.skipped = 0
        self._tasks: list[asyncio.Task[None]] = []

    # -- connection ----------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._connection_loop(), name=self.process),
                       asyncio.create_task(self._ack_loop())]

    async def _open(self) -> ClientConnection:
        last: Exception | None = None
        for region, url in self.urls:
            try:
                ws = await asyncio.wait_for(wire.connect(
                    url, self.token, open_timeout=5, ping_interval=None, max_size=2**23,
                    close_timeout=2), 8)
                try:
                    await wire.read_hello(ws, 15)
                except wire.NoHello:  # a ConnectionError
                    await ws.close()
                    raise
                self.region = region
                self.url = url
                return ws
            except (OSError, TimeoutError, InvalidHandshake, InvalidStatus, ConnectionClosed,
                    ConnectionError, ValueError) as exc:
                last = exc
        raise ConnectionError(str(last))

    async def _connection_loop(self) -> None:
        backoff = 0.2
        while not self.closing:
            try:
                ws = await self._open()
            except ConnectionError:
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            self.conn += 1
            self.ws = ws
            self.history.add("conn", type="open", process=self.process, region=self.region,
                             conn=self.conn, gateway=self.url)
            self.connected.set()
            self.hello.set()
            reason = "closed"
            pinger = asyncio.create_task(self._pings(ws))
            try:
                async for raw in ws:
                    self._on_frame(wire.decode(raw))
            except ConnectionClosed as exc:
                reason = f"closed {exc.rcvd.code if exc.rcvd else 'abruptly'}"
            except (OSError, ValueError) as exc:
                reason = f"error {exc}"
            finally:
                pinger.cancel()
                self.connected.clear()
                self.ws = None
                self.replies.fail_all(ConnectionError(reason))
                self.history.add("conn", type="close", process=self.process,
                                 region=self.region, conn=self.conn, reason=reason)

    async def _pings(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            while True:
                await asyncio.sleep(PING_EVERY)
                await ws.send(wire.encode({"t": "ping"}))

    async def drop(self) -> None:
        """Lose the connection abruptly, as when a phone drops off the network."""
        ws = self.ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        t = frame.get("t")
        if t == "msg":
            conv, seq = frame["conv"], int(frame["seq"])
            self.history.add("deliver", process=self.process, region=self.region,
                             conn=self.conn, conv=conv, seq=seq, prev=int(frame["prev"]),
                             cid=frame.get("cid"),
                             **{"from": f"{frame.get('from')}/{frame.get('from_device')}"})
            self.seen[conv] = max(self.seen.get(conv, 0), seq)
            return
        self.replies.resolve(frame)

    async def _ack_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(ACK_EVERY)
            ws = self.ws
            if ws is None:
                continue
            for conv, seq in list(self.seen.items()):
                if seq > self.acked.get(conv, 0):
                    try:
                        await ws.send(wire.encode({"t": "ack", "conv": conv, "seq": seq}))
                    except (ConnectionClosed, OSError):
                        break
                    self.acked[conv] = seq

    async def request(self, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        ws = self.ws
        if ws is None:
            raise ConnectionError("not connected")
        fid = f"{self.conn}.{next(self.ids)}"
        fut = self.replies.expect(fid)
        try:
            await ws.send(wire.encode({**frame, "id": fid}))
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:  # an OSError too since 3.11: not a lost connection
            raise
        except (ConnectionClosed, OSError) as exc:
            raise ConnectionError(str(exc)) from None
        finally:
            self.replies.discard(fid)

    # -- sending ----------------------------------------------------------------------
    def enqueue(self, conv: str, cid: str, body: str) -> None:
        box = self.outboxes.get(conv)
        if box is None:
            box = self.outboxes[conv] = Outbox()
            box.task = asyncio.create_task(self._drain(conv, box))
        if len(box.queue) >= OUTBOX_LIMIT:
            self.skipped += 1
            return
        box.queue.append(Pending(conv, cid, body, self.history.now()))
        box.wake.set()

    def pending(self) -> int:
        return sum(len(b.queue) for b in self.outboxes.values())

    async def _drain(self, conv: str, box: Outbox) -> None:
        while True:
            if not box.queue:
                box.wake.clear()
                await box.wake.wait()
                continue
            item = box.queue[0]
            if await self._send_until_done(item):
                box.queue.popleft()

    async def _send_until_done(self, item: Pending) -> bool:
        """One message: retried with its cid until ok or a definite failure."""
        while True:
            await self.connected.wait()
            item.attempts += 1
            base = {"process": self.process, "region": self.region, "conv": item.conv,
                    "cid": item.cid, "attempt": item.attempts}
            self.history.add("send", type="invoke", queued=item.queued, **base)
            try:
                reply = await self.request({"t": "send", "conv": item.conv, "cid": item.cid,
                                            "kind": "text", "body": item.body},
                                           self.send_timeout)
            except TimeoutError:
                self.history.add("send", type="info", error="timeout", **base)
                continue
            except ConnectionError:
                self.history.add("send", type="info", error="connection lost", **base)
                await asyncio.sleep(0.2)
                continue
            if reply.get("t") == "sent":
                self.history.add("send", type="ok", seq=int(reply["seq"]),
                                 prev=int(reply["prev"]), **base)
                self.acked_count += 1
                return True
            code = reply.get("code", "?")
            if code in RETRYABLE:
                self.history.add("send", type="info", error=code, **base)
                await asyncio.sleep(max(0.2, reply.get("retry_ms", 300) / 1000))
                continue
            self.history.add("send", type="fail", error=code, **base)
            return True

    async def close(self) -> None:
        self.closing = True
        for box in self.outboxes.values():
            if box.task is not None:
                box.task.cancel()
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *(b.task for b in self.outboxes.values() if b.task),
                             return_exceptions=True)
        for box in self.outboxes.values():
            box.queue.clear()
