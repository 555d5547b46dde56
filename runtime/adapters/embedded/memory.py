"""In-process event fan-out and session directory of the embedded backend."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.ports import Event, Message

log = logging.getLogger("msgctl.eventlog")


class EmbeddedEventLog:
    """The SQLite store is the durable log; subscribers get each event after its commit."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._subscribers: list[Callable[[Event], None]] = []

    async def append(self, messages: list[Message]) -> None:
        await self.store.append(messages)

    def subscribe(self, callback: Callable[[Event], object]) -> None:
        self._subscribers.append(callback)

    def publish(self, event: Event) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # one bad subscriber must not starve the others
                log.exception("event subscriber failed")


class MemoryDirectory:
    """user -> device -> {session: gateway}."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))

    def register(self, user: str, device: str, session: str, gateway: str) -> None:
        self._users[user][device][session] = gateway

    async def settle(self, timeout: float) -> bool:
        return True  # registration is immediate in memory

    def unregister(self, user: str, device: str, session: str) -> None:
        devices = self._users.get(user)
        if devices is None:
            return
        sessions = devices.get(device)
        if sessions is not None:
            sessions.pop(session, None)
            if not sessions:
                del devices[device]
        if not devices:
            del self._users[user]

    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for user in users:
            gateways = {g for s in self._users.get(user, {}).values() for g in s.values()}
            for g in gateways:
                out[g].append(user)
        return dict(out)

    async def device_online(self, user: str, device: str) -> bool:
        return bool(self._users.get(user, {}).get(device))
