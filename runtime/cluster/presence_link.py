"""Presence between regions: this region's flips out, the other regions' in.

The presence runtime of each region tracks only its own sessions. Every time a
user goes online or offline here (watched or not: a watcher may sit in another
region) the flip goes to ``presence.events``, keyed by user and compacted, so
the newest record per user is this region's verdict. MirrorMaker 2 copies it
to every other region as ``<region>.presence.events``; reading those from the
beginning on start rebuilds what the other regions say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import (
    PRESENCE_EVENTS,
    AsyncProducer,
    Worker,
    common,
    mirrored,
    run_or_exit,
    stop_loop,
    take_or_wait,
)
from runtime.core.presence import PresenceState

log = logging.getLogger("msgctl.presence")


def flip_record(region: str, state: PresenceState) -> bytes:
    """The `presence.events` record of a flip of this region's."""
    return env.PresenceFlip(state, region).encode()


def read_flip(value: bytes | None) -> PresenceState:
    """The flip in a record; ValueError for anything else (a bad record costs only itself)."""
    return env.PresenceFlip.decode(value).state


class PresenceLink:
    def __init__(self, bootstrap: str, region: str, peers: list[str],
                 on_remote: Callable[[str, PresenceState], None]) -> None:
        self.bootstrap = bootstrap
        self.region = region
        self.topics = {mirrored(p, PRESENCE_EVENTS): p for p in peers}
        self.on_remote = on_remote
        self.producer: AsyncProducer | None = None
        self.consumer: Consumer | None = None
        self.worker = Worker("presence-link")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.producer = AsyncProducer(self.bootstrap)
        self.consumer = Consumer(common(self.bootstrap) | {
            # offsets are never committed: every start reads the other regions' verdicts
            # from the beginning (compacted, so one record per user)
            "group.id": f"msgctl-presence-{self.region}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
            "topic.metadata.refresh.interval.ms": 2000,
        })
        self.consumer.subscribe(list(self.topics))
        self._task = asyncio.create_task(run_or_exit(self._loop(), "presence link", log),
                                         name="presence-link")

    async def stop(self) -> None:
        await stop_loop(self._task, self.worker, self.consumer)
        if self.producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.producer.close)

    def export(self, flips: list[PresenceState]) -> None:
        assert self.producer is not None
        for state in flips:
            fut = self.producer.send(PRESENCE_EVENTS, state.user.encode(),
                                     flip_record(self.region, state))
            fut.add_done_callback(_report)

    async def _loop(self) -> None:
        assert self.consumer is not None
        while True:
            records = await take_or_wait(self.worker, self.consumer, 500, 0.2,
                                         "the other regions' presence", log)
            for rec in records:
                if rec.error() is not None:
                    continue
                peer = self.topics.get(rec.topic())
                if peer is None:
                    continue
                try:
                    self.on_remote(peer, read_flip(rec.value()))
                except (ValueError, TypeError, RecursionError) as exc:
                    log.warning("skipping an unreadable presence flip from %s: %s", peer, exc)


def _report(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        # the region's next flip of that user corrects it; until then the others see
        # the previous state
        log.warning("presence flip not sent to the other regions: %s", fut.exception())
