"""The gateway's view of the store with message bodies and media in the clear.

Bodies are sealed before a send leaves the gateway (`runtime.core.sealing`), so
every store and log holds them sealed; whatever the gateway reads back for a
device (a `sync` page, a fill, REST history) goes through this view and is
opened with the keyring. Everything else passes straight through.
"""

from __future__ import annotations

from runtime.keyring import Keyring
from runtime.ports import Conversation, Message, MessageStore


class OpenedStore:
    """`MessageStore` whose messages come back opened."""

    def __init__(self, store: MessageStore, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring

    async def messages(self, conv: str, after: int, limit: int) -> list[Message]:
        return [self.keyring.open_message(m)
                for m in await self.store.messages(conv, after, limit)]

    async def message(self, conv: str, seq: int) -> Message | None:
        m = await self.store.message(conv, seq)
        return None if m is None else self.keyring.open_message(m)

    async def create_conversation(self, conv: Conversation) -> Conversation:
        return await self.store.create_conversation(conv)

    async def get_conversation(self, conv: str) -> Conversation | None:
        return await self.store.get_conversation(conv)

    async def conversations_of(self, user: str) -> list[str]:
        return await self.store.conversations_of(user)

    async def head(self, conv: str) -> int:
        return await self.store.head(conv)

    async def heads(self, convs: list[str]) -> dict[str, int]:
        return await self.store.heads(convs)

    async def lookup_cid(self, conv: str, sender: str, cid: str) -> tuple[int, int] | None:
        return await self.store.lookup_cid(conv, sender, cid)
