"""A consumer group on `msg.events` that hands each committed event to a callback.

Used by the push runtime: offsets are committed after the callback took the
batch, so a restart resumes where it left off instead of notifying twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import EVENTS, Worker, common, take
from runtime.ports import Event

log = logging.getLogger("msgctl.eventlog")


class EventFeed:
    def __init__(self, bootstrap: str, group: str, callback: Callable[[Event], None],
                 topics: list[str] | None = None) -> None:
        self.consumer = Consumer(common(bootstrap) | {
            "group.id": group, "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 100,
        })
        self.topics = topics or [EVENTS]
        self.callback = callback
        self.worker = Worker(f"feed-{group}")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer.subscribe(self.topics)
        self._task = asyncio.create_task(self._run(), name="feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.worker.run(self.consumer.close)
        self.worker.close()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a dead feed in a live process would look ready
            log.error("event feed ended: %r; exiting for a restart", exc)
            logging.shutdown()
            os._exit(70)

    async def _loop(self) -> None:
        while True:
            try:
                records = await self.worker.run(take, self.consumer, 500, 0.1)
            except KafkaException as exc:
                log.warning("reading events failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for rec in records:
                if rec.error() is not None:
                    continue
                try:
                    event = env.event_from_dict(env.loads(rec.value()))
                except (ValueError, KeyError, TypeError, RecursionError):
                    log.warning("skipping unreadable event at %s/%s", rec.partition(),
                                rec.offset())
                    continue
                if event is None:
                    continue
                try:
                    self.callback(event)
                except Exception:  # one bad event must not stop the feed
                    log.exception("event handler failed for %r", event)
            if records:
                try:
                    await self.worker.run(lambda: self.consumer.commit(asynchronous=True))
                except KafkaException as exc:
                    log.warning("offset commit failed: %s", exc)
