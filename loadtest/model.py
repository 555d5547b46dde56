"""The pure parts of the load user: message bodies, who talks to whom, and order checking.

- `encode_body` / `decode_body`: the send time travels in the message body, so the
  receiving user can measure send->delivered across processes (same machine, same clock).
- `Plan`: deterministic users and conversations for a run. Every Locust process computes
  the same plan, so the members of a conversation agree on its id and member list and can
  all `create` it (idempotent) without talking to each other.
- `IndexPool`: user slots per Locust worker; a stopped user's slot (its user and device)
  is reused by the next user started on that worker.
- `OrderTracker`: one device's view of each conversation's prev chain; reports duplicates,
  reordering, gaps and forks as violations, following the delivery rules of docs/protocol.md.
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field

from loadtest.profile import Conversations

BODY_TAG = "lt1"

# -- bodies --------------------------------------------------------------------


def encode_body(sent_at_ms: float, size: int, filler: str = "x") -> str:
    """A body of exactly `size` ASCII bytes (or just the header if that is longer)."""
    head = f"{BODY_TAG} {sent_at_ms:.3f} "
    return head + filler * max(size - len(head), 0)


def decode_body(body: object) -> float | None:
    """The send time (ms since the epoch) from a body made by `encode_body`, else None."""
    if not isinstance(body, str) or not body.startswith(BODY_TAG + " "):
        return None
    parts = body.split(" ", 2)
    if len(parts) < 3:
        return None
    try:
        return float(parts[1])
    except ValueError:
        return None


def now_ms() -> float:
    return time.time() * 1000.0


# -- the plan: users and conversations -------------------------------------------


@dataclass(frozen=True)
class ConvSpec:
    id: str
    kind: str  # direct | group
    members: tuple[int, ...]  # user numbers, sorted


class Plan:
    """Users 0..population-1 and their conversations, the same in every process.

    1:1: user i talks with its ring neighbours i±1 .. i±direct/2 (so `direct` each).
    Groups: for each size s, users are cut into consecutive blocks of s (the last block
    wraps around to the start), so everyone is in one group of each size, a few in two.
    """

    def __init__(self, run: str, population: int, conversations: Conversations) -> None:
        self.run = run
        self.population = max(population, 1)
        self.spec = conversations
        self._convs: dict[int, list[ConvSpec]] = {}

    def user_id(self, number: int) -> str:
        return f"load-{self.run}-u{number % self.population}"

    def direct_conv(self, a: int, b: int) -> ConvSpec:
        lo, hi = sorted((a, b))
        return ConvSpec(f"load-{self.run}-d{lo}-{hi}", "direct", (lo, hi))

    def group_conv(self, size: int, block: int) -> ConvSpec:
        n = self.population
        members = tuple(sorted({(block * size + k) % n for k in range(size)}))
        return ConvSpec(f"load-{self.run}-g{size}-{block}", "group", members)

    def conversations(self, number: int) -> list[ConvSpec]:
        u = number % self.population
        if u in self._convs:
            return self._convs[u]
        n = self.population
        out: dict[str, ConvSpec] = {}
        for d in range(1, self.spec.direct // 2 + 1):
            for partner in ((u + d) % n, (u - d) % n):
                if partner != u:
                    c = self.direct_conv(u, partner)
                    out[c.id] = c
        for size in self.spec.groups:
            size = min(size, n)
            if size < 2:
                continue
            blocks = -(-n // size)
            for block in range(blocks):
                c = self.group_conv(size, block)
                if u in c.members:
                    out[c.id] = c
        self._convs[u] = list(out.values())
        return self._convs[u]

    def watch_list(self, number: int, count: int) -> list[str]:
        u = number % self.population
        others = [i for i in range(self.population) if i != u]
        rng = random.Random(f"{self.run}/{u}/watch")
        return [self.user_id(i) for i in sorted(rng.sample(others, min(count, len(others))))]


class IndexPool:
    """Slots w, w+W, w+2W, ... for worker w of W; the lowest free slot is handed out first."""

    def __init__(self, worker_index: int = 0, workers: int = 1) -> None:
        self.worker_index = max(worker_index, 0)
        self.workers = max(workers, 1)
        self._free: list[int] = []
        self._next = 0

    def acquire(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        slot = self.worker_index + self._next * self.workers
        self._next += 1
        return slot

    def release(self, slot: int) -> None:
        heapq.heappush(self._free, slot)


# -- order tracking -----------------------------------------------------------------


@dataclass
class _Hole:
    lo: int  # the last seq this device had before the jump
    hi: int  # the prev of the msg that jumped: lo..hi must be the device's own messages
    seq: int  # the msg that jumped (for the report)


@dataclass
class _Chain:
    links: dict[int, int] = field(default_factory=dict)  # seq -> prev, all known
    next_of: dict[int, int] = field(default_factory=dict)  # prev -> seq
    own: dict[int, int] = field(default_factory=dict)  # this device's messages: seq -> prev
    base: int | None = None  # where this device's knowledge of the chain starts
    head: int | None = None  # the end of the gap-free chain from base (what can be acked)
    conn_last: int | None = None  # the last msg seq on the current connection
    holes: list[_Hole] = field(default_factory=list)


class OrderTracker:
    """One device's order checker. Feed it every `msg`, `sent` and `batch`.

    Per connection and conversation, `msg` frames must come in seq order, once, and each
    `prev` must be the seq of the previous `msg`, except across this device's own
    messages (it gets `sent` for those, which may arrive before or after). Across
    connections, what is resumed must continue the chain. Every (seq, prev) seen anywhere
    must agree. A jump over seqs that are not (yet) known as this device's own is a hole:
    it is a violation once no send of this device in that conversation is still
    outstanding or of unknown outcome (a timed-out send may later turn out to fill it).
    Methods return the violations they found (one line each).
    """

    PRUNE_AT = 4096  # links per conversation before old ones are forgotten
    KEEP = 1024

    def __init__(self) -> None:
        self.chains: dict[str, _Chain] = {}
        self.sending: dict[str, str] = {}  # cid -> conv, waiting for `sent`
        self.unknown: dict[str, str] = {}  # cid -> conv, outcome unknown (timeout, drop)
        self.violations = 0
        self.duplicates = 0

    def _chain(self, conv: str) -> _Chain:
        c = self.chains.get(conv)
        if c is None:
            c = self.chains[conv] = _Chain()
        return c

    def head(self, conv: str) -> int | None:
        c = self.chains.get(conv)
        return c.head if c else None

    def heads(self) -> dict[str, int]:
        return {conv: c.head for conv, c in self.chains.items() if c.head is not None}

    # -- connections and sends ---------------------------------------------------
    def new_connection(self) -> None:
        for c in self.chains.values():
            c.conn_last = None

    def send_started(self, conv: str, cid: str) -> None:
        self.unknown.pop(cid, None)
        self.sending[cid] = conv

    def send_unknown(self, cid: str) -> None:
        """The send timed out or its connection dropped: it may or may not be stored."""
        conv = self.sending.pop(cid, None)
        if conv is not None:
            self.unknown[cid] = conv

    def send_not_stored(self, cid: str) -> list[str]:
        """The server refused the send (an error reply): nothing was stored."""
        conv = self.sending.pop(cid, None) or self.unknown.pop(cid, None)
        return self._check(conv) if conv else []

    def all_unknown(self) -> None:
        for cid in list(self.sending):
            self.send_unknown(cid)

    def _outstanding(self, conv: str) -> bool:
        return conv in self.sending.values() or conv in self.unknown.values()

    # -- frames ------------------------------------------------------------------
    def on_sent(self, conv: str, cid: str, seq: int, prev: int) -> list[str]:
        self.sending.pop(cid, None)
        self.unknown.pop(cid, None)
        c = self._chain(conv)
        c.own[seq] = prev
        out = self._link(conv, c, seq, prev)
        return out + self._check(conv)

    def on_msg(self, conv: str, seq: int, prev: int) -> tuple[bool, list[str]]:
        """Returns (new to this device, violations)."""
        c = self._chain(conv)
        out: list[str] = []
        if c.conn_last is not None:
            if seq <= c.conn_last:
                self.violations += 1
                out.append(f"{conv}: msg seq {seq} came after seq {c.conn_last} on one "
                           "connection (duplicate or out of order)")
            elif prev != c.conn_last:
                c.holes.append(_Hole(c.conn_last, prev, seq))
        elif c.head is not None and prev > c.head:
            # the first msg after a (re)connect skips what this device does not have
            c.holes.append(_Hole(c.head, prev, seq))
        if c.conn_last is None or seq > c.conn_last:
            c.conn_last = seq
        new = seq not in c.links
        if not new:
            self.duplicates += 1
        out += self._link(conv, c, seq, prev)
        out += self._check(conv)
        return new, out

    def on_batch(self, conv: str, msgs: list[tuple[int, int]]) -> tuple[int, list[str]]:
        """A sync reply: (seq, prev) in order. Returns (how many were new, violations)."""
        c = self._chain(conv)
        out: list[str] = []
        new = 0
        for i, (seq, prev) in enumerate(msgs):
            if i and (seq <= msgs[i - 1][0] or prev != msgs[i - 1][0]):
                self.violations += 1
                out.append(f"{conv}: sync batch has seq {seq} (prev {prev}) after seq "
                           f"{msgs[i - 1][0]}")
            if seq not in c.links:
                new += 1
            out += self._link(conv, c, seq, prev)
        return new, out + self._check(conv)

    def check(self) -> list[str]:
        """Re-check open holes (call now and then)."""
        out: list[str] = []
        for conv in list(self.chains):
            out += self._check(conv)
        return out

    def open_holes(self) -> int:
        return sum(len(c.holes) for c in self.chains.values())

    # -- internals ---------------------------------------------------------------
    def _link(self, conv: str, c: _Chain, seq: int, prev: int) -> list[str]:
        out = []
        known = c.links.get(seq)
        if known is not None and known != prev:
            self.violations += 1
            out.append(f"{conv}: seq {seq} came with prev {prev}, earlier with prev {known}")
            return out
        other = c.next_of.get(prev)
        if other is not None and other != seq:
            self.violations += 1
            out.append(f"{conv}: seq {prev} is followed by both {other} and {seq}")
            return out
        if prev >= seq:
            self.violations += 1
            out.append(f"{conv}: seq {seq} has prev {prev} (not below it)")
            return out
        c.links[seq] = prev
        c.next_of[prev] = seq
        if c.base is None:
            c.base = c.head = prev
        while c.base in c.links:  # knowledge extends downwards
            c.base = c.links[c.base]
        assert c.head is not None
        while c.head in c.next_of:
            c.head = c.next_of[c.head]
        if len(c.links) > self.PRUNE_AT:
            self._prune(c)
        return out

    def _prune(self, c: _Chain) -> None:
        assert c.head is not None
        floor = c.head - self.KEEP
        for seq in [s for s in c.links if s < floor]:
            prev = c.links.pop(seq)
            c.next_of.pop(prev, None)
            c.own.pop(seq, None)
        c.base = min(c.links.values(), default=c.head)
        while c.base in c.links:
            c.base = c.links[c.base]

    def _check(self, conv: str) -> list[str]:
        c = self.chains.get(conv)
        if c is None or not c.holes:
            return []
        out: list[str] = []
        keep: list[_Hole] = []
        outstanding = self._outstanding(conv)
        for hole in c.holes:
            cur = hole.hi
            while cur > hole.lo and cur in c.own:
                cur = c.own[cur]
            if cur == hole.lo:
                continue  # only own messages were skipped: fine
            if cur < hole.lo or not outstanding:
                self.violations += 1
                out.append(f"{conv}: msg seq {hole.seq} (prev {hole.hi}) followed seq "
                           f"{hole.lo}: seq {cur} is missing (gap)")
                continue
            keep.append(hole)
        c.holes = keep
        return out

    def finish(self) -> tuple[list[str], int]:
        """At the end: holes that can no longer be filled are violations; holes that wait
        on sends of unknown outcome are only counted (returned as unverified)."""
        self.all_unknown()
        out = self.check()
        return out, self.open_holes()
