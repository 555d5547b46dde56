"""Presence runtime: drives the pure `PresenceTracker` with a clock and a timer.

Gateways report sessions and heartbeats; watchers get `presence` frames for
the users they watch (lazy: nobody else's changes are sent anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from runtime.core.presence import Change, PresenceState, PresenceTracker
from runtime.metrics import METRICS

Notify = Callable[[frozenset[str], PresenceState], None]


class PresenceService:
    def __init__(self, notify: Notify, *, ttl: float, grace: float,
                 clock: Callable[[], float] = time.time,
                 export: Callable[[list[PresenceState]], None] | None = None) -> None:
        """`export` gets every local online/offline flip, for the other regions."""
        self.tracker = PresenceTracker(ttl=ttl, grace=grace, export=export is not None)
        self.export = export
        self.notify = notify
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def connect(self, user: str, session: str) -> None:
        self._emit(self.tracker.connect(user, session, self.clock()))

    def heartbeat(self, user: str, session: str) -> None:
        now = self.clock()
        if self.tracker.has_session(user, session):
            self.tracker.heartbeat(user, session, now)
        else:  # expired while silent, yet the connection is alive: it is back
            self._emit(self.tracker.connect(user, session, now))

    def disconnect(self, user: str, session: str) -> None:
        self._emit(self.tracker.disconnect(user, session, self.clock()))
        self._wake.set()

    def remote(self, region: str, state: PresenceState) -> None:
        self._emit(self.tracker.remote(region, state))

    async def watch(self, session: str, users: tuple[str, ...]) -> list[PresenceState]:
        return self.tracker.watch(session, users)

    def _emit(self, changes: list[Change]) -> None:
        for change in changes:
            self.notify(change.watchers, change.state)
        if self.tracker.outbox and self.export is not None:
            flips, self.tracker.outbox = self.tracker.outbox, []
            self.export(flips)
        METRICS.presence_online.set(len(self.tracker._online))

    async def _run(self) -> None:
        while True:
            self._emit(self.tracker.tick(self.clock()))
            deadline = self.tracker.next_deadline()
            timeout = 1.0 if deadline is None else max(0.01, min(1.0, deadline - self.clock()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
