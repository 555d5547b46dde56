"""Per-conversation sequencing and send dedupe.

The ingest shell collects a batch of sends, asks `SequencerState.plan` what to
do with each, makes the new messages durable, and only then calls `commit`.
Nothing is assigned twice: a plan never mutates state, so a failed append
leaves the state as it was and the same batch can be planned again.

A seq is ``epoch << 40 | counter``. The counter restarts at 1 in a new epoch,
so seq stays strictly increasing when a conversation is re-homed. A conversation
that moved (`runtime.core.homes`) has its own epoch and base here (`adopt`), or is
`fence`d: its sends are refused, never sequenced, so an old home cannot add to a
history that moved on.

A cid the cache does not hold is looked up in the store, which is written after the
durable append (the cluster's router stores what the sequencer committed). A lookup
is trusted only once the store holds every message whose cid the cache lacks: after
a restore from a snapshot window, or an eviction from the cache, the conversation
waits for the store (`expect_stored`), and its sends that need the store meanwhile
are `deferred` (no message, no answer: the client retries), never sequenced anew.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

EPOCH_SHIFT = 40
COUNTER_MASK = (1 << EPOCH_SHIFT) - 1


def make_seq(epoch: int, counter: int) -> int:
    return (epoch << EPOCH_SHIFT) | counter


def split_seq(seq: int) -> tuple[int, int]:
    return seq >> EPOCH_SHIFT, seq & COUNTER_MASK


def sender_key(sender: str, cid: str) -> str:
    """The idempotency key of a send: another member reusing a cid is not a retry, and the
    length prefix keeps (sender, cid) pairs from colliding."""
    return f"{len(sender)}:{sender}{cid}"


@dataclass(frozen=True)
class SendRequest:
    conv: str
    key: str  # sender_key(sender, cid)

    @classmethod
    def of(cls, conv: str, sender: str, cid: str) -> SendRequest:
        return cls(conv, sender_key(sender, cid))


@dataclass(frozen=True)
class Assignment:
    """The decision for one request: a new message at `seq`, or a duplicate of one."""

    conv: str
    key: str
    seq: int
    prev: int
    duplicate: bool
    fenced: bool = False  # refused: the conversation is homed elsewhere now (seq 0)
    deferred: bool = False  # not decided: the store lags what the cache forgot (seq 0)

    @property
    def decided(self) -> bool:
        """A seq was given: a new message's or the original's (not fenced, not deferred)."""
        return not self.fenced and not self.deferred

    @property
    def made(self) -> bool:
        """A new message at `seq`."""
        return self.decided and not self.duplicate


@dataclass
class Plan:
    assignments: list[Assignment]
    heads: dict[str, int]  # conversation -> head after this plan

    @property
    def new(self) -> list[Assignment]:
        return [a for a in self.assignments if a.made]


class SequencerState:
    """Heads per conversation plus a bounded memory of recent (conv, cid) -> seq.

    The memory is a cache; the durable store keeps the full cid index and is
    consulted through `lookup` for anything the cache has forgotten.
    """

    def __init__(self, *, epoch: int = 0, recent_capacity: int = 100_000) -> None:
        self.epoch = epoch
        self.heads: dict[str, int] = {}
        self._recent: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._capacity = recent_capacity
        # conversations whose every cid is in the cache: they were empty when first loaded
        # and have lost nothing to eviction, so the store need not be asked about a new cid
        self._complete: set[str] = set()
        # conversations that moved: conv -> (epoch, base) here, or fenced (homed elsewhere)
        self.moved: dict[str, tuple[int, int]] = {}
        self.fenced: dict[str, int] = {}  # conv -> the epoch that fenced it
        # the highest head the store was seen to hold, and conv -> a seq it must hold
        # before a lookup there is trusted (every message whose cid the cache lacks)
        self._stored: dict[str, int] = {}
        self._unstored: dict[str, int] = {}

    def adopt(self, conv: str, epoch: int, base: int) -> None:
        """This sequencer homes `conv` in `epoch`, continuing after `base`: a head above
        `base` in an older epoch is an orphan (reconciled later), not the head."""
        if self.fenced.get(conv, -1) > epoch or self.moved.get(conv, (-1, 0))[0] > epoch:
            return  # a stale record: a later epoch is known here
        self.fenced.pop(conv, None)
        self.moved[conv] = (epoch, base)
        head = self.heads.get(conv, 0)
        if head > base and (head >> EPOCH_SHIFT) < epoch:
            head = base
        # the base is held (the new home read it from its store, or waited for it)
        self.heads[conv] = max(head, base)
        # the cached cids of orphans are not this epoch's: ask the store (which ignores them)
        self._complete.discard(conv)

    def fence(self, conv: str, epoch: int) -> None:
        """`conv` is homed elsewhere from `epoch` on: refuse its sends."""
        if self.moved.get(conv, (-1, 0))[0] >= epoch:
            return  # a stale record: this sequencer already homes a later epoch
        self.moved.pop(conv, None)
        self.fenced[conv] = max(epoch, self.fenced.get(conv, 0))

    def epoch_of(self, conv: str) -> int:
        return self.moved[conv][0] if conv in self.moved else self.epoch

    def orphan(self, conv: str, seq: int) -> bool:
        """`seq` is of an older epoch above this home's base (see runtime.core.homes)."""
        moved = self.moved.get(conv)
        return moved is not None and (seq >> EPOCH_SHIFT) < moved[0] and seq > moved[1]

    def load_head(self, conv: str, head: int) -> None:
        first = conv not in self.heads
        if self.orphan(conv, head):
            head = self.moved[conv][1]
        self.heads[conv] = max(self.heads.get(conv, 0), head)
        if first and head == 0:
            self._complete.add(conv)

    def complete(self, conv: str) -> bool:
        """True when `known` is authoritative for `conv` (no store lookup needed)."""
        return conv in self._complete

    def mark_complete(self, conv: str) -> None:
        """Every cid of `conv` is in the cache (a restored snapshot that covers it all)."""
        self._complete.add(conv)

    def mark_incomplete(self, conv: str) -> None:
        """The cache may lack cids of `conv` that the store holds (a snapshot found behind
        the store): dedupe asks the store again."""
        self._complete.discard(conv)

    def head(self, conv: str) -> int:
        return self.heads.get(conv, 0)

    def note_stored(self, conv: str, head: int) -> None:
        """The store was read holding `conv` up to `head`."""
        stored = self._stored[conv] = max(self._stored.get(conv, 0), head)
        if self._unstored.get(conv, stored + 1) <= stored:
            del self._unstored[conv]

    def expect_stored(self, conv: str, seq: int) -> None:
        """The cache no longer answers for `conv` up to `seq`: its lookups wait until the
        store is read holding `seq`."""
        if seq > self._stored.get(conv, 0):
            self._unstored[conv] = max(self._unstored.get(conv, 0), seq)

    def store_behind(self, conv: str) -> bool:
        """A lookup in `conv` could miss a message the store is still to be written."""
        return conv in self._unstored

    def trust_store(self, conv: str) -> None:
        """Look `conv`'s cids up in the store as it is (it never caught up: see the kernel)."""
        self._unstored.pop(conv, None)

    def remember(self, conv: str, key: str, seq: int, prev: int) -> None:
        k = (conv, key)
        self._recent[k] = (seq, prev)
        self._recent.move_to_end(k)
        while len(self._recent) > self._capacity:
            (evicted_conv, _), (evicted_seq, _) = self._recent.popitem(last=False)
            self._complete.discard(evicted_conv)
            self.expect_stored(evicted_conv, evicted_seq)

    def known(self, conv: str, key: str) -> tuple[int, int] | None:
        return self._recent.get((conv, key))

    def unknown(self, requests: Iterable[SendRequest]) -> list[SendRequest]:
        """The distinct requests whose key only the durable store can answer: not in the
        cache, in a conversation the cache does not cover whole."""
        out: dict[tuple[str, str], SendRequest] = {}
        for req in requests:
            k = (req.conv, req.key)
            if k not in out and not self.complete(req.conv) and k not in self._recent:
                out[k] = req
        return list(out.values())

    def plan(
        self,
        requests: Iterable[SendRequest],
        lookup: Callable[[str, str], tuple[int, int] | None] = lambda conv, key: None,
        defer: Collection[str] = (),
    ) -> Plan:
        """Decide each request; one whose key the cache lacks, in a conversation of
        `defer` (its store is behind, see `store_behind`), is deferred."""
        heads: dict[str, int] = {}
        seen: dict[tuple[str, str], Assignment] = {}
        out: list[Assignment] = []
        for req in requests:
            key = (req.conv, req.key)
            if key in seen:
                first = seen[key]
                out.append(first if first.fenced or first.deferred else
                           Assignment(req.conv, req.key, first.seq, first.prev, True))
                continue
            if req.conv in self.fenced:
                a = Assignment(req.conv, req.key, 0, 0, False, fenced=True)
                seen[key] = a
                out.append(a)
                continue
            found = self._recent.get(key)
            if found is None and req.conv in defer:
                a = Assignment(req.conv, req.key, 0, 0, False, deferred=True)
                seen[key] = a
                out.append(a)
                continue
            found = found or lookup(req.conv, req.key)
            if found is not None and self.orphan(req.conv, found[0]):
                found = None  # reconciliation sequences it again in this epoch
            if found is not None:
                a = Assignment(req.conv, req.key, found[0], found[1], True)
            else:
                prev = heads.get(req.conv, self.head(req.conv))
                epoch, counter = split_seq(prev)
                mine = self.epoch_of(req.conv)
                # a new epoch starts its counter again at 1, above every older seq
                seq = make_seq(mine, counter + 1 if epoch == mine else 1)
                if seq <= prev:
                    raise ValueError(f"epoch {mine} is behind conversation {req.conv} "
                                     f"head {prev}")
                heads[req.conv] = seq
                a = Assignment(req.conv, req.key, seq, prev, False)
            seen[key] = a
            out.append(a)
        return Plan(out, heads)

    def commit(self, plan: Plan) -> None:
        """Apply a plan whose new messages are now durable."""
        for conv, head in plan.heads.items():
            self.load_head(conv, head)
        for a in plan.assignments:
            if a.decided:
                self.remember(a.conv, a.key, a.seq, a.prev)
