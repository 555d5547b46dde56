"""What the cluster sequencer keeps per conversation in the compacted `msg.seq-state` topic.

A snapshot holds the head and the last few (cid key -> seq, prev) of one
conversation: enough for a new sequencer owner to continue the seq chain and
to recognise the retries that matter (a client retries within seconds, long
before `window` newer messages arrive). Older cids are looked up in the store.
Pure: records in, state out.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any

from runtime.core.sequencing import Plan, SequencerState, split_seq
from runtime.core.watermarks import Watermark

WINDOW = 32


class SnapshotBook:
    """The per-conversation recent-cid windows whose snapshots go to `msg.seq-state`."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        # each entry [cid key, seq, prev] as the list it is written as: every transaction
        # makes a snapshot per changed conversation, and copying each entry into a list
        # then made 80 snapshots of 32 entries take 295 us to build and encode, not 128
        self._recent: dict[str, deque[list[Any]]] = {}

    def note(self, plan: Plan) -> set[str]:
        """Record a committed plan's new messages; returns the conversations that changed."""
        changed: set[str] = set()
        for a in plan.new:
            ring = self._recent.get(a.conv)
            if ring is None:
                ring = self._recent[a.conv] = deque(maxlen=self.window)
            ring.append([a.key, a.seq, a.prev])
            changed.add(a.conv)
        return changed

    def preview(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """The snapshots `plan` will leave, without changing anything (it may be aborted)."""
        out: dict[str, dict[str, Any]] = {}
        added: dict[str, list[list[Any]]] = {}
        for a in plan.new:
            added.setdefault(a.conv, []).append([a.key, a.seq, a.prev])
        for conv, head in plan.heads.items():
            # the entries are shared with the ring, never changed in either
            ring = [*self._recent.get(conv, ()), *added.get(conv, ())][-self.window:]
            out[conv] = {"head": head, "recent": ring}
        return out

    def restore(self, state: SequencerState, conv: str, snap: dict[str, Any]) -> None:
        """Load one snapshot into the sequencer state (replayed oldest first)."""
        head = int(snap.get("head", 0))
        recent = [(str(c), int(s), int(p)) for c, s, p in snap.get("recent", [])]
        state.load_head(conv, head)
        self._recent[conv] = deque((list(r) for r in recent), maxlen=self.window)
        for key, seq, prev in recent:
            state.remember(conv, key, seq, prev)
        # every cid of the conversation is in the window only while its counter is small
        _, counter = split_seq(head)
        if counter <= self.window:
            state.mark_complete(conv)
        else:
            # the store answers for the cids before the window, once it holds them (the
            # router may still be writing what was committed before the restart)
            state.expect_stored(conv, recent[0][2] if recent else head)


def head_key(conv: str) -> bytes:
    # JSON arrays: ids may contain any character, so no separator is safe
    return json.dumps(["h", conv]).encode()


def marks_key(conv: str, user: str) -> bytes:
    return json.dumps(["w", conv, user]).encode()


# the sequencer's input positions, written in each transaction beside the snapshots: the
# offsets commit with the results without a consumer-group round trip (AddOffsetsToTxn and
# TxnOffsetCommit were two of a transaction's five broker requests)
OFFSETS_KEY = json.dumps(["o"]).encode()


def parse_key(key: bytes) -> tuple[str, str, str | None]:
    """('h', conv, None), ('w', conv, user) or ('o', '', None) from a `msg.seq-state` key."""
    parts = json.loads(key)
    if parts[0] == "w":
        return "w", parts[1], parts[2]
    if parts[0] == "o":
        return "o", "", None
    return "h", parts[1], None


def offsets_value(positions: dict[int, int]) -> bytes:
    """The record of the next ingress offset to read per partition."""
    return json.dumps({str(p): o for p, o in sorted(positions.items())}).encode()


def parse_offsets(snap: Any) -> dict[int, int]:
    """Partition -> next offset from an offsets record; ValueError when malformed."""
    if not isinstance(snap, dict):
        raise ValueError(f"an offsets record is a mapping, not {type(snap).__name__}")
    out: dict[int, int] = {}
    for part, offset in snap.items():
        p, o = int(part), offset
        if type(o) is not int or p < 0 or o < 0:
            raise ValueError(f"bad ingress offset {part}: {offset!r}")
        out[p] = o
    return out


class LruMarks(OrderedDict[tuple[str, str], Watermark]):
    """(conv, user) -> watermark, bounded."""

    def __init__(self, capacity: int = 500_000) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: tuple[str, str], value: Watermark) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)
