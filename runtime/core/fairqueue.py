"""Per-key bounded queues served round-robin: the push runtime's fairness rule, no I/O.

`FairQueue` holds items under keys (a device token for notifications, a
conversation for messages waiting to be fanned out) and hands them out one key
at a time in rotation, so a key with one item waits for at most one turn of
every other key, however long their backlogs are. The bounds:

- `per_key` items per key. An item offered to a full key drops one item *of
  that key only*: the oldest one with the same collapse key if there is one
  (it is superseded: the providers would collapse it anyway), otherwise the
  key's oldest item. Other keys never lose anything to it.
- `max_keys` keys holding a slot (items queued, or one being handled). An item
  for a new key when every slot is taken is refused; the caller may wait for a
  slot instead (`has_room`). Memory is bounded by `per_key * max_keys` items.

A key is served one item at a time: `take` hands out the next key's oldest
item and parks the key until the caller reports it `done`, so one slow key
(a device whose provider keeps asking to retry later) holds at most one
worker, and its next item goes to the back of the rotation.

Like all of `runtime.core`, it touches no clock, socket or event loop; the
asyncio shell in `runtime.push` drives it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

ACCEPTED = "accepted"
COLLAPSED = "collapsed"  # accepted; an older item of the key with the same collapse key dropped
OVERFLOW = "overflow"  # accepted; the key's oldest item dropped
FULL = "full"  # refused: a new key, and all `max_keys` slots are taken


@dataclass(frozen=True)
class Offered(Generic[T]):
    """What `offer` did: whether the item was queued, and the item it dropped, if any.

    `dropped` is the refused item itself when `reason` is `FULL`.
    """

    accepted: bool
    reason: str = ACCEPTED
    dropped: T | None = None


class FairQueue(Generic[K, T]):
    def __init__(self, per_key: int, max_keys: int) -> None:
        if per_key < 1 or max_keys < 1:
            raise ValueError("per_key and max_keys must be at least 1")
        self.per_key = per_key
        self.max_keys = max_keys
        # every key holding a slot: its waiting items, oldest first, with their collapse keys
        self._queues: dict[K, deque[tuple[Hashable | None, T]]] = {}
        # keys with items and none in service, in serving order (each key at most once)
        self._ready: deque[K] = deque()
        self._busy: set[K] = set()  # keys whose taken item is not `done` yet
        self._items = 0

    @property
    def items(self) -> int:
        """Items waiting (not counting those taken and not yet done)."""
        return self._items

    @property
    def keys(self) -> int:
        """Keys holding a slot: with items waiting, or one in service."""
        return len(self._queues)

    @property
    def in_service(self) -> int:
        return len(self._busy)

    @property
    def waiting_keys(self) -> int:
        """Keys in the rotation: the most turns a newly queued key waits before its own."""
        return len(self._ready)

    def __contains__(self, key: object) -> bool:
        """Whether `key` holds a slot (items waiting, or one in service)."""
        return key in self._queues

    def pending(self, key: K) -> int:
        q = self._queues.get(key)
        return 0 if q is None else len(q)

    def has_room(self, key: K) -> bool:
        """Whether `offer(key, ...)` would be accepted (possibly dropping one of the key's)."""
        return key in self._queues or len(self._queues) < self.max_keys

    def offer(self, key: K, item: T, collapse: Hashable | None = None) -> Offered[T]:
        """Queue `item` under `key`; `collapse` names what a newer item supersedes."""
        q = self._queues.get(key)
        if q is None:
            if len(self._queues) >= self.max_keys:
                return Offered(False, FULL, item)
            q = self._queues[key] = deque()
            self._ready.append(key)  # a new key waits behind every key already waiting
        result: Offered[T] = Offered(True)
        if len(q) >= self.per_key:
            # drop within this key only; a superseded item of the same collapse key first
            index = next((i for i, (c, _) in enumerate(q)
                          if collapse is not None and c == collapse), None)
            if index is None:
                result = Offered(True, OVERFLOW, q.popleft()[1])
            else:
                dropped = q[index][1]
                del q[index]
                result = Offered(True, COLLAPSED, dropped)
            self._items -= 1
        q.append((collapse, item))
        self._items += 1
        return result

    def take(self) -> tuple[K, T] | None:
        """The oldest item of the next key in the rotation; None when no key is waiting.

        The key is parked (its later items wait) until `done(key)`.
        """
        if not self._ready:
            return None
        key = self._ready.popleft()
        _, item = self._queues[key].popleft()
        self._items -= 1
        self._busy.add(key)
        return key, item

    def done(self, key: K) -> bool:
        """The item taken for `key` was handled. True when the key gave its slot back."""
        if key not in self._busy:
            return False
        self._busy.discard(key)
        if self._queues[key]:
            self._ready.append(key)  # its next item waits for the others' turns first
            return False
        del self._queues[key]
        return True
