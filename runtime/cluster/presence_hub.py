"""The presence runtime of a cluster region: one process, fed by every gateway over Redis.

Gateways report connects, heartbeats, disconnects and watches on
`presence.in`; the pure tracker decides, and each change goes to the gateways
whose sessions watch that user. On start (and after Redis comes back) it asks
all gateways to report again, since its state lives only in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.redis_bus import (
    PRESENCE_IN,
    PRESENCE_RESYNC,
    Subscriber,
    gateway_channel,
    publish,
)
from runtime.core.presence import PresenceState, presence_frame
from runtime.metrics import METRICS
from runtime.presence import PresenceService

log = logging.getLogger("msgctl.presence")


class PresenceHub:
    def __init__(self, redis: Any, subscriber_redis: Any, region: str, *, ttl: float,
                 grace: float,
                 export: Callable[[list[PresenceState]], None] | None = None) -> None:
        """`export` takes this region's flips to the other regions (presence_link)."""
        self.redis = redis
        self.region = region
        self.service = PresenceService(self._notify, ttl=ttl, grace=grace, export=export)
        self.session_gateway: dict[str, tuple[str, str]] = {}  # session -> (gateway, user)
        self.subscriber = Subscriber(subscriber_redis, [PRESENCE_IN], self.handle,
                                     self._resync)
        self._pruner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self.service.ready and self.subscriber.connected.is_set()

    async def start(self) -> None:
        await self.service.start()
        await self.subscriber.start()
        await self._resync()
        self._pruner = asyncio.create_task(self._prune(), name="presence-prune")

    async def stop(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
        await self.subscriber.stop()
        await self.service.stop()

    async def _prune(self) -> None:
        """Forget sessions the tracker let expire (their gateway died without a disconnect)."""
        while True:
            await asyncio.sleep(60)
            tracker = self.service.tracker
            for session, (_, user) in list(self.session_gateway.items()):
                if not tracker.has_session(user, session) and not tracker.is_watching(session):
                    del self.session_gateway[session]

    async def _resync(self) -> None:
        await publish(self.redis, PRESENCE_RESYNC, {"t": "resync"})

    def handle(self, _channel: str, raw: bytes) -> None:
        """One gateway report from `presence.in`; a malformed one is logged and dropped."""
        try:
            p = env.PresenceReport.decode(raw)
        except ValueError as exc:
            METRICS.errors.labels("bad_presence_report").inc()
            log.warning("dropping a malformed presence report: %s", exc)
            return
        gw, session, user = p.gw, p.session, p.user
        if p.op == "connect":
            self.session_gateway[session] = (gw, user)
            self.service.connect(user, session)
        elif p.op == "heartbeat":
            self.session_gateway.setdefault(session, (gw, user))
            self.service.heartbeat(user, session)
        elif p.op == "disconnect":
            self.service.disconnect(user, session)
            self.session_gateway.pop(session, None)
        else:  # watch
            self.session_gateway.setdefault(session, (gw, user))
            states = self.service.tracker.watch(session, list(p.users))
            if p.rid:
                self._publish(gw, {"t": "watch_reply", "rid": p.rid,
                                   "states": [_state(s) for s in states]})

    def _notify(self, watchers: frozenset[str], state: PresenceState) -> None:
        by_gateway: dict[str, list[str]] = defaultdict(list)
        for session in watchers:
            where = self.session_gateway.get(session)
            if where is not None and where[0]:
                by_gateway[where[0]].append(session)
        for gw, sessions in by_gateway.items():
            self._publish(gw, {"t": "presence", "sessions": sessions, "state": _state(state)})

    def _publish(self, gw: str, payload: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(
            publish(self.redis, gateway_channel(self.region, gw), payload))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("presence change not published: %s", task.exception())


def _state(s: PresenceState) -> dict[str, Any]:
    frame = presence_frame(s)
    return {"user": frame["user"], "state": frame["state"], "last_active": frame["last_active"]}
