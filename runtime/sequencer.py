"""Sequencer runtime: ingest (order, dedupe, durable append), receipts and the router.

Ingest batches the sends that arrive while the previous append is on its way
to disk (group commit), plans them with the sequencing kernel the cluster
sequencer runs too (`runtime.sequencing`), appends the
new messages to the event log, and resolves each send only after the append
returned: `sent` means durable. The router hands every sequenced event to the
gateways holding a member's device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from runtime.conversations import Conversations
from runtime.core.cursors import CursorBuffer
from runtime.core.watermarks import MarkOp, Watermark, plan_marks
from runtime.metrics import METRICS
from runtime.ports import (
    DeviceState,
    Event,
    EventLog,
    Message,
    MessageStore,
    Receipt,
    Send,
    SessionDirectory,
    StateStore,
    TypingEvent,
    Unavailable,
)
from runtime.sequencing import SequencingKernel

log = logging.getLogger("msgctl.sequencer")


@dataclass
class _Pending:
    send: Send
    future: asyncio.Future[Message]


class Ingest:
    """The embedded sequencer: group commit over the event log, on the shared kernel."""

    def __init__(self, event_log: EventLog, store: MessageStore, *, max_batch: int = 512
                 ) -> None:
        self.event_log = event_log
        self.store = store
        self.kernel = SequencingKernel(store)
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(Unavailable("sequencer stopping"))

    def submit(self, send: Send) -> asyncio.Future[Message]:
        """Queue one send; the future resolves once it is durable (or with Unavailable)."""
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(send, fut))
        self._wake.set()
        return fut

    async def head(self, conv: str) -> int:
        return await self.kernel.head(conv)

    async def heads(self, convs: list[str]) -> dict[str, int]:
        # the kernel's head wherever it has one (it may be ahead of what a read of the
        # store returned), the store's, in batches, for the rest
        return await self.kernel.heads(convs)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = (self._pending[:self.max_batch],
                                        self._pending[self.max_batch:])
                await self._process(batch)

    async def _process(self, pending: list[_Pending]) -> None:
        try:
            batch = await self.kernel.plan([p.send for p in pending])
            t0 = time.perf_counter()
            if batch.made:
                await self.event_log.append(batch.new)
            METRICS.append_seconds.observe(time.perf_counter() - t0)
            self.kernel.commit(batch)
        except Exception as exc:
            log.error("append failed, %d sends answered unavailable: %s", len(pending), exc)
            for p in pending:
                if not p.future.done():
                    p.future.set_exception(Unavailable(str(exc)))
            return
        METRICS.messages.inc(len(batch.made))
        for i, p in enumerate(pending):
            # in-batch duplicates find their original in the batch, older ones in the store
            a = batch.plan.assignments[i]
            if a.deferred:  # the store lags the cache: never here, where both are one write
                if not p.future.done():
                    p.future.set_exception(Unavailable("the store is catching up"))
                continue
            try:
                msg = batch.made_for(i) or await self.store.message(a.conv, a.seq)
            except Exception as exc:  # the loop must outlive a failed read
                log.error("reading original %s/%s failed: %s", a.conv, a.seq, exc)
                msg = None
            if p.future.done():
                continue
            if msg is None:
                p.future.set_exception(Unavailable("original message not readable"))
            else:
                p.future.set_result(msg)
        for msg in sorted(batch.new, key=lambda m: (m.conv, m.seq)):
            self.event_log.publish(msg)


RECEIPT_WINDOW = 0.025  # seconds over which receipts of one conversation are coalesced


class Receipts:
    """Device cursors and per-user watermarks; publishes receipt events when they move.

    Receipts are cumulative, so within a short window only the newest watermark per
    (conversation, user, kind) is published: in a group every member's ack would
    otherwise reach every other member, a frame count that grows with the square
    of the group size.
    """

    def __init__(self, ingest: Ingest, state: StateStore, event_log: EventLog) -> None:
        self.ingest = ingest
        self.state = state
        self.event_log = event_log
        self._pending: dict[tuple[str, str, str], Receipt] = {}
        # cursor and watermark writes wait for the same flush: only the newest value is written
        self._cursors = CursorBuffer()
        self._dirty_marks: dict[tuple[str, str], Watermark] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._flush_at: asyncio.TimerHandle | None = None
        self._marks: OrderedDict[tuple[str, str], Watermark] = OrderedDict()

    async def _mark(self, user: str, conv: str) -> Watermark:
        key = (user, conv)
        mark = self._marks.get(key)
        if mark is None:
            mark = await self.state.watermark(user, conv)
            mark = self._marks.setdefault(key, mark)
        self._marks.move_to_end(key)
        while len(self._marks) > 200_000:
            self._marks.popitem(last=False)
        return mark

    async def device_cursors(self, user: str, device: str) -> DeviceState:
        """The device's cursors: the store's, with acks still on their way to it."""
        state = await self.state.device_state(user, device)
        self._cursors.overlay(user, device, state.cursors)
        return state

    async def ack(self, user: str, device: str, conv: str, seq: int) -> None:
        head = await self.ingest.head(conv)
        if self._cursors.advance(user, device, conv, seq, head):
            self._schedule()
        await self._apply(MarkOp("ack", conv, user, device, seq), head)

    async def read(self, user: str, device: str, conv: str, seq: int) -> None:
        await self._apply(MarkOp("read", conv, user, device, seq), await self.ingest.head(conv))

    async def _apply(self, op: MarkOp, head: int) -> None:
        mark = await self._mark(op.user, op.conv)
        plan = plan_marks([op], lambda conv, user: mark, lambda conv: head)
        for (conv, user), moved in plan.marks.items():
            self._store(user, conv, moved)
        for conv, user, kind, seq, device in plan.receipts():
            self._publish(Receipt(conv, user, kind, seq, device))

    def _publish(self, receipt: Receipt) -> None:
        self._pending[(receipt.conv, receipt.user, receipt.kind)] = receipt
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(RECEIPT_WINDOW, self._flush)

    def _flush(self) -> None:
        self._flush_at = None
        pending, self._pending = self._pending, {}
        for receipt in pending.values():
            self.event_log.publish(receipt)
        if self._cursors.pending or self._dirty_marks:
            cursors = self._cursors.take()
            marks, self._dirty_marks = self._dirty_marks, {}
            task = asyncio.get_running_loop().create_task(self._persist(cursors, marks))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _persist(self, cursors: dict[tuple[str, str, str], int],
                       marks: dict[tuple[str, str], Watermark]) -> None:
        for (user, device, conv), acked in cursors.items():
            await self.state.set_cursor(user, device, conv, acked)
        for (user, conv), mark in marks.items():
            await self.state.set_watermark(user, conv, mark)

    async def flush(self) -> None:
        """Write what waits for the next flush now (on shutdown)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
        self._flush()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _store(self, user: str, conv: str, mark: Watermark) -> None:
        self._marks[(user, conv)] = mark
        self._dirty_marks[(user, conv)] = mark
        self._schedule()

    async def marks(self, user: str, conv: str) -> Watermark:
        return await self._mark(user, conv)


Dispatch = Callable[[str, Event, list[str]], None]


class Router:
    """Hands each event to the gateways that hold a device of a member."""

    def __init__(self, conversations: Conversations, directory: SessionDirectory,
                 dispatch: Dispatch) -> None:
        self.conversations = conversations
        self.directory = directory
        self.dispatch = dispatch
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def on_event(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="router")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self.route(event)
            except Exception:
                log.exception("routing failed for %r", event)

    async def route(self, event: Event) -> None:
        conv = await self.conversations.get(event.conv)
        if conv is None:
            return
        members = list(conv.members)
        if isinstance(event, TypingEvent):
            members = [m for m in members if m != event.user]
        for gateway, users in (await self.directory.gateways_of(members)).items():
            self.dispatch(gateway, event, users)
