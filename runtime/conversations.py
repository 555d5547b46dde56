"""The conversation cache every runtime reads through, whichever family stores them.

Members and home never change after creation, so a bounded LRU over the store
is all a runtime needs; it is shared by the embedded node, the cluster gateway,
router and push.
"""

from __future__ import annotations

from collections import OrderedDict

from runtime.ports import Conversation, MessageStore


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
