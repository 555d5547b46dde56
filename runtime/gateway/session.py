"""One device connection: its bounded outgoing queue and its per-conversation streams.

Everything the server sends to a device goes through `enqueue`, so replies,
messages, receipts and presence keep one order and one bound. A device that
does not read fast enough fills its queue and is closed with a reason (close
code 1013); it reconnects and resumes after its last ack, and the memory the
server holds for it never grows past the queue bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from runtime.core.delivery import ConvStream, Entry, Offer
from runtime.core.errors import CLOSE_TRY_AGAIN
from runtime.metrics import METRICS
from runtime.ports import Message

log = logging.getLogger("msgctl.gateway")

FILL_PAGE = 200

ReadPage = Callable[[str, int, int], Awaitable[list[Message]]]


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def msg_frame(msg: Message) -> dict[str, Any]:
    return {"t": "msg", **msg.to_wire()}


class Session:
    def __init__(self, ws: ServerConnection, user: str, device: str, session_id: str,
                 queue_size: int, read_page: ReadPage) -> None:
        self.ws = ws
        self.user = user
        self.device = device
        self.id = session_id
        self.cursors: dict[str, int] = {}  # conv -> acked seq when this connection opened
        self.streams: dict[str, ConvStream] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._read_page = read_page
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    # -- outgoing ---------------------------------------------------------
    def enqueue(self, frame: dict[str, Any]) -> bool:
        if self.closing:
            return False
        try:
            self._queue.put_nowait(encode(frame))
        except asyncio.QueueFull:
            METRICS.closes.labels("slow_consumer").inc()
            self.close(CLOSE_TRY_AGAIN, "slow consumer: send queue full, reconnect to resume")
            return False
        METRICS.frames_out.labels(frame.get("t", "?")).inc()
        return True

    async def writer(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                await self.ws.send(text)
        except ConnectionClosed:
            pass

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        log.info("closing session %s of %s/%s: %s", self.id, self.user, self.device, reason)
        self.spawn(self.ws.close(code, reason))

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- ordered delivery -------------------------------------------------
    def stream(self, conv: str) -> ConvStream:
        stream = self.streams.get(conv)
        if stream is None:
            stream = self.streams[conv] = ConvStream(self.cursors.get(conv, 0))
        return stream

    def _entry(self, msg: Message) -> Entry:
        return Entry(msg.seq, msg.prev, own=msg.sender == self.user and
                     msg.from_device == self.device)

    def offer(self, msg: Message) -> None:
        action = self.stream(msg.conv).offer(self._entry(msg))
        if action is Offer.DELIVER:
            if self.enqueue(msg_frame(msg)):
                METRICS.deliveries.inc()
        elif action is Offer.FILL:
            self.spawn(self._fill(msg.conv))

    def resume(self, conv: str) -> None:
        """Send what this device has not acked in `conv` (on connect)."""
        if self.stream(conv).start_fill():
            self.spawn(self._fill(conv))

    async def _fill(self, conv: str) -> None:
        stream = self.stream(conv)
        try:
            while not self.closing:
                page = await self._read_page(conv, stream.last, FILL_PAGE)
                entries = {m.seq: m for m in page}
                out, more = stream.filled([self._entry(m) for m in page], len(page) == FILL_PAGE)
                for entry in out:
                    if not self.enqueue(msg_frame(entries[entry.seq])):
                        return
                    METRICS.deliveries.inc()
                if not more:
                    return
        except Exception:
            log.exception("fill of %s for session %s failed", conv, self.id)
            stream.abort_fill()
