"""One device connection: the I/O half of a session, its bounded outgoing queue.

The protocol rules live in the sans-I/O `runtime.core.session.SessionMachine`;
this object carries out the actions that touch only this connection (`Reply`,
`Deliver`, `Close`, `Fill`) and owns what is I/O: the queue, its writer task,
fills reading the store, the closing handshake. A frame for a connection with
nothing queued and room in its transport is written at once, without the task.

Everything the server sends to a device goes through `enqueue`, so replies,
messages, receipts and presence keep one order and one bound. The bound is in
bytes, not frames: a burst of small frames queued in one loop tick is normal,
a device that stops reading is not. A device whose queue passes the bound is
closed with a reason (close code 1013); it reconnects and resumes after its
last ack, and the memory the server holds for it never grows past the bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed

from runtime.core import jsontext
from runtime.core.errors import CLOSE_TRY_AGAIN
from runtime.core.session import Action, Close, Deliver, Fill, Reply, SessionMachine, msg_frame
from runtime.gateway.connection import Connection
from runtime.metrics import METRICS, labelled
from runtime.ports import Message

log = logging.getLogger("msgctl.gateway")

FILL_RETRY_S = 1.0  # seconds before a failed store read of a fill is retried
FILL_PAGE = 200
HOLE_WAIT_S = 30.0  # seconds a fill waits for a hole in the store to fill
CLOSE_GRACE = 2.0  # seconds a closing handshake may take before the socket is dropped

# close tasks outlive their session's own tasks, which are cancelled on disconnect
_closers: set[asyncio.Task[None]] = set()

ReadPage = Callable[[str, int, int], Awaitable[list[Message]]]


def encode(frame: dict[str, Any]) -> str:
    return jsontext.dumps_text(frame)


class Session:
    # slots: tens of thousands of these live at once on one gateway
    __slots__ = ("ws", "machine", "_out", "_writer", "_queue_limit", "queued_bytes", "_room",
                 "ping", "_read_page", "_tasks", "_pending_close", "closing", "inflight")

    def __init__(self, ws: Connection, machine: SessionMachine, queue_bytes: int,
                 read_page: ReadPage) -> None:
        self.ws = ws
        self.machine = machine
        # frames waiting to be written; a (code, reason) item closes after what came first
        self._out: deque[str | tuple[int, str]] | None = None  # made on first use
        self._writer: asyncio.Task[None] | None = None  # only while there is something to write
        self._queue_limit = queue_bytes
        self.queued_bytes = 0
        # fills (resume, gap repair) wait for room instead of overrunning the bound
        self._room: asyncio.Event | None = None
        self.ping: Awaitable[float] | None = None  # the keepalive's outstanding pong
        self._read_page = read_page
        self._tasks: set[asyncio.Task[None]] | None = None
        self.inflight: asyncio.Semaphore | None = None  # made on the first send
        self._pending_close: tuple[int, str] | None = None
        # set once a Close is carried out (or the connection is gone): nothing more is queued
        self.closing = False

    @property
    def user(self) -> str:
        return self.machine.user

    @property
    def device(self) -> str:
        return self.machine.device

    @property
    def id(self) -> str:
        return self.machine.id

    # -- actions of the machine that touch only this connection ------------
    def apply(self, action: Action, text: str | None = None, *, paced: bool = False) -> bool:
        """Carry out a local action (`Reply`, `Deliver`, `Close`, `Fill`); False when a
        frame was not queued. `text`: a `Deliver`'s frame, encoded once by the caller;
        `paced`: a `Reply` of a reader that waited for room (see `enqueue`)."""
        if isinstance(action, Reply):
            frame = action.frame
            if frame.get("t") == "error":
                labelled(METRICS.errors, frame["code"]).inc()
            return self.enqueue(frame, paced=paced)
        if isinstance(action, Deliver):
            sent = self.enqueue_text(text or encode(msg_frame(action.msg)), "msg",
                                     paced=action.paced)
            if sent:
                METRICS.deliveries.inc()
            return sent
        if isinstance(action, Close):
            self._close(action)
        elif isinstance(action, Fill):
            self.spawn(self._fill(action))
        else:
            raise TypeError(f"not a local action: {action!r}")
        return True

    def apply_all(self, actions: Iterable[Action]) -> None:
        """Carry out a machine method's answer that holds only local actions."""
        for action in actions:
            self.apply(action)

    def expire(self) -> None:
        """The token the connection was opened with expired (a timer of the gateway)."""
        self.apply_all(self.machine.expire())

    def close(self, code: int, reason: str, *, flush: bool = False,
              cause: str | None = None) -> None:
        """Close the connection; with `flush`, after the frames already queued are sent."""
        # a close the gateway decides (slow consumer, keepalive, shutdown) wins even over a
        # Close the machine returned but that is not carried out yet (an expiry's error
        # frame that overflowed the queue): the machine only has to stop taking frames
        self.machine.close(code, reason, flush=flush, cause=cause)
        self._close(Close(code, reason, flush, cause))

    def lost(self) -> None:
        """The connection is gone: nothing more is queued or read."""
        self.closing = True
        self.machine.connection_lost()

    # -- outgoing ---------------------------------------------------------
    def enqueue(self, frame: dict[str, Any], *, paced: bool = False) -> bool:
        """Queue a frame; past the bound the peer is a slow consumer and is closed.

        `paced` frames come from a fill that waited for room before reading its
        page, so they may pass the bound by at most one page.
        """
        if self.closing:
            return False
        return self.enqueue_text(encode(frame), frame.get("t", "?"), paced=paced)

    def enqueue_text(self, text: str, t: str, *, paced: bool = False) -> bool:
        """`enqueue` for a frame already encoded (one encoding serves every recipient)."""
        if self.closing:
            return False
        if not paced and self.queued_bytes + len(text) > self._queue_limit:
            self.close(CLOSE_TRY_AGAIN, "slow consumer: send queue full, reconnect to resume",
                       cause="slow_consumer")
            return False
        self.queued_bytes += len(text)
        self._push(text)
        labelled(METRICS.frames_out, t).inc()
        return True

    def _push(self, item: str | tuple[int, str]) -> None:
        if self._writer is None and not self._out and isinstance(item, str) and \
                self.ws.send_text_now(item):
            # nothing queued before it: written now, in order, without a writer task
            self.queued_bytes -= len(item)
            return
        if self._out is None:
            self._out = deque()
        self._out.append(item)
        if self._writer is None:
            # an idle connection holds no writer task: memory per connection stays small
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        """Send queued frames in order, then end; the next enqueue starts a new writer."""
        out = self._out
        assert out is not None
        try:
            while out:
                item = out.popleft()
                if isinstance(item, tuple):
                    self._close_now(*item)
                    return
                await self.ws.send(item)
                self.queued_bytes -= len(item)
                if self._room is not None and self.queued_bytes <= self._queue_limit // 4:
                    self._room.set()
        except ConnectionClosed:
            pass
        finally:
            self._writer = None
            if not out:
                self._out = None  # an empty deque still costs ~700 bytes

    async def wait_room(self) -> None:
        """Wait until the queue is at most half full."""
        if self.queued_bytes <= self._queue_limit // 2:
            return
        if self._room is None:
            self._room = asyncio.Event()
        self._room.clear()
        await self._room.wait()

    async def drain(self, timeout: float) -> None:
        """Give the writer up to `timeout` to send what is queued (used by a flushing close)."""
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=timeout)

    def stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def _close(self, action: Close) -> None:
        if self.closing:
            return
        self.closing = True
        if action.cause is not None:
            METRICS.closes.labels(action.cause).inc()
        log.info("closing session %s of %s/%s: %s", self.id, self.user, self.device,
                 action.reason)
        if action.flush:
            self._pending_close = (action.code, action.reason)
            self._push((action.code, action.reason))
        else:
            self._close_now(action.code, action.reason)

    def finish_close(self) -> None:
        """A flushing close whose frames could not all be sent in time closes now."""
        if self._pending_close is not None:
            self._close_now(*self._pending_close)

    def _close_now(self, code: int, reason: str) -> None:
        self._pending_close = None
        task = asyncio.ensure_future(self._shutdown(code, reason))
        _closers.add(task)
        task.add_done_callback(_closers.discard)

    async def _shutdown(self, code: int, reason: str) -> None:
        # an abusive or stuck peer may never answer the closing handshake
        try:
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_GRACE)
        except (TimeoutError, ConnectionClosed):
            self.ws.transport.abort()

    def spawn(self, coro: Awaitable[Any]) -> None:
        if self._tasks is None:
            self._tasks = set()
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks or ()):
            task.cancel()

    # -- fills ------------------------------------------------------------
    async def _fill(self, fill: Fill) -> None:
        conv, after = fill.conv, fill.after
        holes_until: float | None = None  # past this, a hole is taken as the chain
        try:
            while not self.closing:
                await self.wait_room()
                try:
                    page = await self._read_page(conv, after, FILL_PAGE)
                except Exception as exc:
                    # a store read that timed out (a loaded Cassandra) must not leave the
                    # device behind for good: the same page is read again
                    log.warning("fill of %s for session %s: read failed, retrying: %s", conv,
                                self.id, exc)
                    await asyncio.sleep(FILL_RETRY_S)
                    continue
                more: Fill | None = None
                # no await from here to the last enqueue: a live message offered now
                # would otherwise overtake the rest of the page
                accept = holes_until is not None and time.monotonic() > holes_until
                for action in self.machine.filled(conv, page, len(page) == FILL_PAGE,
                                                  accept_holes=accept):
                    if isinstance(action, Fill):
                        more = action
                    elif not self.apply(action):
                        return
                if more is None:
                    return
                if more.hole:
                    # the store is still catching up with another data center (after a
                    # partition): wait for the missing messages rather than skip them,
                    # for at most HOLE_WAIT_S, then take the store's word for it
                    if holes_until is None:
                        holes_until = time.monotonic() + HOLE_WAIT_S
                    await asyncio.sleep(FILL_RETRY_S / 4)
                else:
                    holes_until = None
                after = more.after
        except Exception:
            log.exception("fill of %s for session %s failed", conv, self.id)
            self.machine.fill_failed(conv)
        finally:
            if self.closing:
                self.machine.fill_failed(conv)
