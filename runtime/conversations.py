"""The conversation cache every runtime reads through, whichever family stores them.

Members and home never change after creation, so a bounded LRU over the store
is all a runtime needs; it is shared by the embedded node, the cluster gateway,
router and push.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from runtime.awaiting import all_of
from runtime.ports import Conversation, MessageStore

# store reads `get_many` keeps in flight at once
READS_IN_FLIGHT = 32


class Conversations:
    """A bounded cache over the store's conversations (members never change)."""

    def __init__(self, store: MessageStore, capacity: int = 50_000) -> None:
        self.store = store
        self._cache: OrderedDict[str, Conversation] = OrderedDict()
        self._capacity = capacity

    def _cached(self, conv: str) -> Conversation | None:
        """The cached conversation, marked as used; None when not cached."""
        hit = self._cache.get(conv)
        if hit is not None:
            self._cache.move_to_end(conv)
        return hit

    async def get(self, conv: str) -> Conversation | None:
        hit = self._cached(conv)
        if hit is not None:
            return hit
        found = await self.store.get_conversation(conv)
        if found is not None:
            self._put(found)
        return found

    async def get_many(self, convs: Iterable[str]) -> dict[str, Conversation]:
        """`get` of each of `convs` (those that exist), the ones not cached read from the
        store READS_IN_FLIGHT at a time rather than one after another; a failed read is
        raised once every read has ended."""
        out: dict[str, Conversation] = {}
        missing: list[str] = []
        for conv in dict.fromkeys(convs):
            hit = self._cached(conv)
            if hit is None:
                missing.append(conv)
            else:
                out[conv] = hit
        if missing:
            found = await all_of((self.get(c) for c in missing), READS_IN_FLIGHT)
            out.update((c, f) for c, f in zip(missing, found, strict=True) if f is not None)
        return out

    async def create(self, conv: Conversation) -> Conversation:
        stored = await self.store.create_conversation(conv)
        self._put(stored)
        return stored

    def _put(self, conv: Conversation) -> None:
        self._cache[conv.conv] = conv
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
