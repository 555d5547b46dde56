"""Device cursors acknowledged but not yet durable, shared by both families.

A device's cursor is the highest seq it acked, clamped to the head and never
moving back. Acks are written to the store in batches; until a batch lands,
the buffered value must still count when the device syncs or reconnects, so
the buffer overlays what the store returns. Bounded: the oldest devices are
forgotten first (their cursors are in the store by then).
"""

from __future__ import annotations

from collections import OrderedDict

from runtime.core.watermarks import clamp

CursorKey = tuple[str, str, str]  # (user, device, conv)


class CursorBuffer:
    def __init__(self, bound: int = 100_000) -> None:
        self.bound = bound
        self._cursors: OrderedDict[tuple[str, str], dict[str, int]] = OrderedDict()
        self._dirty: dict[CursorKey, int] = {}

    def advance(self, user: str, device: str, conv: str, seq: int, head: int) -> bool:
        """Move the device's cursor to `seq` (clamped to `head`); True if it moved, and
        then the new value waits in `take()` for the next write."""
        acked = clamp(seq, head)
        key = (user, device)
        cursors = self._cursors.setdefault(key, {})
        self._cursors.move_to_end(key)
        while len(self._cursors) > self.bound:
            self._cursors.popitem(last=False)
        if acked <= cursors.get(conv, 0):
            return False
        cursors[conv] = acked
        self.requeue({(user, device, conv): acked})
        return True

    def overlay(self, user: str, device: str, stored: dict[str, int]) -> dict[str, int]:
        """`stored` (the store's cursors of the device) with the buffered ones on top."""
        for conv, acked in self._cursors.get((user, device), {}).items():
            stored[conv] = max(stored.get(conv, 0), acked)
        return stored

    @property
    def pending(self) -> bool:
        return bool(self._dirty)

    def take(self) -> dict[CursorKey, int]:
        """The cursors to write now (the newest value of each); the buffer forgets them."""
        dirty, self._dirty = self._dirty, {}
        return dirty

    def requeue(self, dirty: dict[CursorKey, int]) -> None:
        """Cursors whose write failed (or new ones) wait for the next write."""
        for key, acked in dirty.items():
            self._dirty[key] = max(self._dirty.get(key, 0), acked)
