"""The sequencing kernel both families run: one algorithm for the embedded `Ingest` and the
cluster `KafkaSequencer`.

For a batch of sends it loads the heads and asks the store about the (sender, cid)
keys the cache cannot answer, asks the pure `SequencerState` for a plan, and makes
the new messages. The caller makes them durable (an SQLite commit, a Kafka
transaction) and only then calls `commit`: a batch whose write failed leaves the
state as it was and can be planned again. Acks and reads go through the pure
`plan_marks` with the watermarks the caller holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from runtime.awaiting import all_of
from runtime.core.sequencing import Plan, SendRequest, SequencerState
from runtime.core.watermarks import MarkOp, MarksPlan, Watermark, plan_marks
from runtime.ports import Message, MessageStore, Send

log = logging.getLogger("msgctl.sequencer")

# conversations taken in between two yields to the event loop by `heads`
HEADS_SLICE = 500
# watermark reads `load_marks` keeps in flight at once
MARKS_IN_FLIGHT = 32
# how long a conversation's sends that need the store wait for its head to move before its
# lookups are trusted as they are: a store that gains nothing in that long lost what it
# lags by (a broker that lost the log's tail), and a new message is then right
STORE_CATCH_UP_S = 60.0


@dataclass
class Batch:
    """A planned batch: `plan.assignments[i]` decides `sends[i]`; `made` holds the new
    messages by (conv, sender key), in plan order."""

    sends: list[Send]
    plan: Plan
    made: dict[tuple[str, str], Message]

    @property
    def new(self) -> list[Message]:
        return list(self.made.values())

    def made_for(self, i: int) -> Message | None:
        """The message this batch made for `sends[i]` (also for an in-batch repeat of it);
        None when it repeats one sequenced before."""
        a = self.plan.assignments[i]
        return self.made.get((a.conv, a.key))


class MessageIds:
    """Message ids unique across processes and restarts without a random draw each."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = 0

    def __call__(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count:x}"


class SequencingKernel:
    def __init__(self, store: MessageStore, state: SequencerState | None = None) -> None:
        self.store = store
        self.state = state or SequencerState()
        self.mids = MessageIds()
        # conversations whose head was compared with the store's in this process
        self._checked: set[str] = set()
        self.behind: list[tuple[str, int, int]] = []  # (conv, restored, stored) found behind
        # conv -> (since when its sends wait for the store, the store's head then)
        self._waiting: dict[str, tuple[float, int]] = {}

    async def head(self, conv: str) -> int:
        """The conversation's head, from the store on first use.

        A head restored from a snapshot (the cluster's `msg.seq-state`) is also compared
        with the store's once: a snapshot log that lost its tail in a machine crash (the
        broker had not fsynced it; Cassandra had the messages) must never hand out a seq
        the store already holds, which would overwrite an acknowledged message.
        """
        if conv not in self._checked:
            self._check(conv, await self.store.head(conv))
        return self.state.head(conv)

    async def heads(self, convs: Iterable[str]) -> dict[str, int]:
        """`head` of each of `convs`; those not compared with the store yet are read from it
        in batches (`MessageStore.heads`), not one request each."""
        wanted = list(dict.fromkeys(convs))
        unchecked = [c for c in wanted if c not in self._checked]
        if unchecked:
            stored = await self.store.heads(unchecked)
            for i, conv in enumerate(unchecked):
                if i and i % HEADS_SLICE == 0:
                    await asyncio.sleep(0)  # 10,000 of them take ~20 ms: let others run
                self._check(conv, stored.get(conv, 0))
        return {conv: self.state.head(conv) for conv in wanted}

    async def _wait_for_store(self, convs: set[str]) -> set[str]:
        """Of `convs`, whose store was behind the cache, those it still is behind: read
        again now; their sends that need a lookup are deferred."""
        stored = await self.store.heads(list(convs))
        now = time.monotonic()
        still: set[str] = set()
        for conv in convs:
            head = stored.get(conv, 0)
            self.state.note_stored(conv, head)
            if not self.state.store_behind(conv):
                self._waiting.pop(conv, None)
                continue
            if conv not in self._waiting:
                log.warning("the store is behind the sequencer in %s (it holds %d): sends "
                            "that only it can dedupe wait for it", conv, head)
            since, seen = self._waiting.get(conv, (now, head))
            if head > seen:
                since = now  # it is catching up: wait on
            self._waiting[conv] = (since, head)
            if now - since < STORE_CATCH_UP_S:
                still.add(conv)
                continue
            log.warning("the store gained nothing in %s for %.0f s: its cids are looked "
                        "up as it is", conv, STORE_CATCH_UP_S)
            self.state.trust_store(conv)
            del self._waiting[conv]
        return still

    def _check(self, conv: str, stored: int) -> None:
        """Take the store's head of `conv` into the state (a max: never moves it back)."""
        self.state.note_stored(conv, stored)
        # another caller may have compared it while this one read: warn once
        if conv not in self._checked:
            restored = self.state.heads.get(conv)
            if restored is not None and stored > restored:
                log.warning("sequencer state of %s is behind the store (restored head %d, "
                            "stored %d): continuing after the stored head", conv, restored,
                            stored)
                self.behind.append((conv, restored, stored))
                # the cids of the lost tail are only in the store
                self.state.mark_incomplete(conv)
            self._checked.add(conv)
        self.state.load_head(conv, stored)

    async def plan(self, sends: list[Send], also: Iterable[str] = ()) -> Batch:
        """Plan `sends`; the heads of `also` (conversations of acks and reads) are loaded
        too. Raises what the store raises; nothing changes until `commit`."""
        # the heads not compared with the store yet are read together, not one round
        # trip after another (a batch of many new conversations, or the first after a
        # restart, waited for each in turn)
        await self.heads([*dict.fromkeys(s.conv for s in sends), *also])
        reqs = [SendRequest.of(s.conv, s.sender, s.cid) for s in sends]
        ask = self.state.unknown(reqs)
        defer: set[str] = set()
        behind = {r.conv for r in ask if self.state.store_behind(r.conv)}
        if behind:
            defer = await self._wait_for_store(behind)
            ask = [r for r in ask if r.conv not in defer]
        found: dict[tuple[str, str], tuple[int, int]] = {}
        if ask:
            by_key = {(s.conv, r.key): s for s, r in zip(sends, reqs, strict=True)}
            hits = await asyncio.gather(*(
                self.store.lookup_cid(r.conv, by_key[(r.conv, r.key)].sender,
                                      by_key[(r.conv, r.key)].cid) for r in ask))
            for r, hit in zip(ask, hits, strict=True):
                if hit is not None:
                    found[(r.conv, r.key)] = hit
        plan = self.state.plan(reqs, lambda conv, key: found.get((conv, key)), defer)
        made: dict[tuple[str, str], Message] = {}
        for s, a in zip(sends, plan.assignments, strict=True):
            if a.made:
                made[(a.conv, a.key)] = Message(a.conv, a.seq, a.prev, self.mids(), s.cid,
                                                s.sender, s.device, s.ts, s.kind, s.body,
                                                s.media, s.moved_from)
        return Batch(sends, plan, made)

    def marks(self, batch: Batch | None, ops: list[MarkOp],
              current: dict[tuple[str, str], Watermark]) -> MarksPlan:
        """The watermarks `ops` move; `current` holds the watermark of every (conv, user)
        of `ops`; heads include the batch's new messages."""
        heads = batch.plan.heads if batch is not None else {}
        return plan_marks(ops, lambda conv, user: current[(conv, user)],
                          lambda conv: heads.get(conv, self.state.head(conv)))

    def commit(self, batch: Batch) -> None:
        """The batch's new messages are durable: the state moves."""
        self.state.commit(batch.plan)


async def load_marks(ops: Iterable[MarkOp], cached: Callable[[str, str], Watermark | None],
                     read: Callable[[str, str], Awaitable[Watermark]]
                     ) -> dict[tuple[str, str], Watermark]:
    """The watermark of every (conv, user) in `ops`: from `cached`, else from the store,
    MARKS_IN_FLIGHT reads at a time (the first acks of many new pairs in one batch
    waited for each read in turn); a failed read is raised once every read has ended."""
    out: dict[tuple[str, str], Watermark] = {}
    missing: list[tuple[str, str]] = []
    for op in ops:
        k = (op.conv, op.user)
        if k not in out:
            mark = cached(*k)
            if mark is None:
                missing.append(k)
            out[k] = mark if mark is not None else Watermark()
    if missing:
        reads = await all_of((read(user, conv) for conv, user in missing), MARKS_IN_FLIGHT)
        out.update(zip(missing, reads, strict=True))
    return out
