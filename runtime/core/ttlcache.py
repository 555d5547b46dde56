"""A bounded cache whose entries expire, and that a fill racing a `forget` cannot poison.

The push runtime keeps each user's push tokens here, so a message does not cost a
store read per member. Entries live `ttl` seconds; a token change announced by
the gateway that took it `forget`s the user at once. A read that was already
under way when the `forget` came would put back what it read before the change:
every key has a generation, `ticket` takes it before the read, and `put` drops
a value whose ticket is older than the key's last `forget` (or `clear`).

Like all of `runtime.core`, it touches no clock, socket or event loop: callers pass
`now` (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most `capacity` entries (least recently used out first), each `ttl` seconds."""

    def __init__(self, ttl: float, capacity: int = 100_000) -> None:
        if ttl < 0 or capacity < 1:
            raise ValueError("ttl must be >= 0 and capacity >= 1")
        self.ttl = ttl
        self.capacity = capacity
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        # generation per key forgotten since the last clear, and the clears
        self._forgotten: dict[K, int] = {}
        self._epoch = 0
        self._tick = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> tuple[bool, V | None]:
        """(True, value) for a live entry, else (False, None)."""
        hit = self._entries.get(key)
        if hit is None:
            return False, None
        if now >= hit[0]:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, hit[1]

    def ticket(self, key: K) -> tuple[int, int]:
        """Taken before reading `key`'s value from its source; hand it to `put`."""
        return self._epoch, self._forgotten.get(key, 0)

    def put(self, key: K, value: V, now: float, ticket: tuple[int, int]) -> bool:
        """Keep `value` for `ttl` unless `key` was forgotten after `ticket` was taken
        (the value may predate the change); whether it was kept."""
        if self.ttl == 0 or ticket != self.ticket(key):
            return False
        self._entries[key] = (now + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return True

    def forget(self, key: K) -> None:
        """`key` changed at its source: drop it, and any read of it now under way."""
        self._entries.pop(key, None)
        self._tick += 1
        self._forgotten[key] = self._tick
        if len(self._forgotten) > self.capacity:
            # bounded too: a clear invalidates every ticket outstanding
            self.clear()

    def clear(self) -> None:
        """Everything may have changed (e.g. the change notices were missed)."""
        self._entries.clear()
        self._forgotten.clear()
        self._epoch += 1
