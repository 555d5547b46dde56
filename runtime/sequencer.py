"""Sequencer runtime: ingest (order, dedupe, durable append), receipts and the router.

Ingest batches the sends that arrive while the previous append is on its way
to disk (group commit), asks the pure `SequencerState` for seqs, appends the
new messages to the event log, and resolves each send only after the append
returned: `sent` means durable. The router hands every sequenced event to the
gateways holding a member's device.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.core.sequencing import SendRequest, SequencerState
from runtime.core.watermarks import Watermark, apply_ack, apply_read, clamp
from runtime.metrics import METRICS
from runtime.ports import (
    Conversation,
    DeviceState,
    Event,
    EventLog,
    Message,
    MessageStore,
    Receipt,
    SessionDirectory,
    StateStore,
    TypingEvent,
)

log = logging.getLogger("msgctl.sequencer")


class Unavailable(Exception):
    """The log could not take the write; the client retries with the same cid."""


class Conversations:
    """A bounded cache over the store's conversations (members never change)."""

    def __init__(self, store: MessageStore, capacity: int = 50_000) -> None:
        self.store = store
        self._cache: OrderedDict[str, Conversation] = OrderedDict()
        self._capacity = capacity

    async def get(self, conv: str) -> Conversation | None:
        hit = self._cache.get(conv)
        if hit is not None:
            self._cache.move_to_end(conv)
            return hit
        found = await self.store.get_conversation(conv)
        if found is not None:
            self._put(found)
        return found

    async def create(self, conv: Conversation) -> Conversation:
        stored = await self.store.create_conversation(conv)
        self._put(stored)
        return stored

    def _put(self, conv: Conversation) -> None:
        self._cache[conv.conv] = conv
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)


@dataclass
class _Pending:
    req: SendRequest
    make: Callable[[int, int], Message]
    future: asyncio.Future[Message]
    sender: str
    cid: str


class Ingest:
    def __init__(self, event_log: EventLog, store: MessageStore, *, max_batch: int = 512,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = event_log
        self.store = store
        self.state = SequencerState()
        self.max_batch = max_batch
        self.clock = clock
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._mid_prefix = uuid.uuid4().hex[:16]
        self._mids = 0
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

    def _next_mid(self) -> str:
        # unique across processes and restarts without a random draw per message
        self._mids += 1
        return f"{self._mid_prefix}{self._mids:x}"

    def submit(self, conv: str, cid: str, sender: str, device: str, kind: str, body: str,
               media: dict[str, Any] | None) -> asyncio.Future[Message]:
        """Queue one send; the future resolves once it is durable (or with Unavailable)."""
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def make(seq: int, prev: int) -> Message:
            return Message(conv, seq, prev, self._next_mid(), cid, sender, device,
                           int(self.clock() * 1000), kind, body, media)

        # the idempotency key is the sender's: another member reusing a cid is not a retry;
        # the length prefix keeps (sender, cid) pairs from colliding
        key = f"{len(sender)}:{sender}{cid}"
        self._pending.append(_Pending(SendRequest(conv, key), make, fut, sender, cid))
        self._wake.set()
        return fut

    async def head(self, conv: str) -> int:
        if conv not in self.state.heads:
            self.state.load_head(conv, await self.store.head(conv))
        return self.state.head(conv)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = (self._pending[:self.max_batch],
                                        self._pending[self.max_batch:])
                await self._process(batch)

    async def _process(self, batch: list[_Pending]) -> None:
        try:
            for conv in {p.req.conv for p in batch}:
                await self.head(conv)
            found: dict[tuple[str, str], tuple[int, int]] = {}
            for p in batch:
                key = (p.req.conv, p.req.cid)
                if (key not in found and not self.state.complete(p.req.conv)
                        and self.state.known(*key) is None):
                    hit = await self.store.lookup_cid(p.req.conv, p.sender, p.cid)
                    if hit is not None:
                        found[key] = hit
            plan = self.state.plan([p.req for p in batch], lambda c, i: found.get((c, i)))
            new: dict[tuple[str, str], Message] = {}
            for p, a in zip(batch, plan.assignments, strict=True):
                if not a.duplicate:
                    new[(a.conv, a.cid)] = p.make(a.seq, a.prev)
            t0 = time.perf_counter()
            if new:
                await self.log.append(list(new.values()))
            METRICS.append_seconds.observe(time.perf_counter() - t0)
            self.state.commit(plan)
        except Exception as exc:
            log.error("append failed, %d sends answered unavailable: %s", len(batch), exc)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(Unavailable(str(exc)))
            return
        METRICS.messages.inc(len(new))
        for p, a in zip(batch, plan.assignments, strict=True):
            # in-batch duplicates find their original in `new`, older ones in the store
            try:
                msg = new.get((a.conv, a.cid)) or await self.store.message(a.conv, a.seq)
            except Exception as exc:  # the loop must outlive a failed read
                log.error("reading original %s/%s failed: %s", a.conv, a.seq, exc)
                msg = None
            if p.future.done():
                continue
            if msg is None:
                p.future.set_exception(Unavailable("original message not readable"))
            else:
                p.future.set_result(msg)
        for msg in sorted(new.values(), key=lambda m: (m.conv, m.seq)):
            self.log.publish(msg)


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
        self.log = event_log
        self._pending: dict[tuple[str, str, str], Receipt] = {}
        # cursor and watermark writes wait for the same flush: only the newest value is written
        self._dirty_cursors: dict[tuple[str, str, str], int] = {}
        self._dirty_marks: dict[tuple[str, str], Watermark] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._flush_at: asyncio.TimerHandle | None = None
        self._marks: OrderedDict[tuple[str, str], Watermark] = OrderedDict()
        # acks not yet committed must still count when the device syncs or reconnects
        self._cursors: OrderedDict[tuple[str, str], dict[str, int]] = OrderedDict()

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
        for conv, acked in self._cursors.get((user, device), {}).items():
            state.cursors[conv] = max(state.cursors.get(conv, 0), acked)
        return state

    async def ack(self, user: str, device: str, conv: str, seq: int) -> None:
        head = await self.ingest.head(conv)
        acked = clamp(seq, head)
        key = (user, device)
        cursors = self._cursors.setdefault(key, {})
        self._cursors.move_to_end(key)
        if acked > cursors.get(conv, 0):
            cursors[conv] = acked
        while len(self._cursors) > 100_000:
            self._cursors.popitem(last=False)
        ckey = (user, device, conv)
        self._dirty_cursors[ckey] = max(self._dirty_cursors.get(ckey, 0), acked)
        self._schedule()
        update = apply_ack(await self._mark(user, conv), seq, head)
        if update.delivered_moved:
            self._store(user, conv, update.mark)
            self._publish(Receipt(conv, user, "delivered", update.mark.delivered, device))

    async def read(self, user: str, device: str, conv: str, seq: int) -> None:
        head = await self.ingest.head(conv)
        update = apply_read(await self._mark(user, conv), seq, head)
        if update.delivered_moved or update.read_moved:
            self._store(user, conv, update.mark)
        if update.delivered_moved:
            self._publish(Receipt(conv, user, "delivered", update.mark.delivered, device))
        if update.read_moved:
            self._publish(Receipt(conv, user, "read", update.mark.read, device))

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
            self.log.publish(receipt)
        if self._dirty_cursors or self._dirty_marks:
            cursors, self._dirty_cursors = self._dirty_cursors, {}
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
