"""A consumer group on `msg.events` that hands each committed event to a callback.

Used by the push runtime. The callback may return a future that resolves when
the event has been handled; the offset of a partition is committed only past
events whose futures are done, so a restart replays what was still queued
(at least once; the push runtime drops repeats it has seen) instead of losing
it. Too many unfinished events pause the feed. A notification can wait a little, so
the feed reads in a few large fetches a second rather than one per sequencer commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import (
    EVENTS,
    STORED_OFFSETS,
    Worker,
    common,
    run_or_exit,
    stop_loop,
    store_offsets,
    stuck_watch,
    take_or_wait,
)
from runtime.metrics import METRICS
from runtime.ports import Event

log = logging.getLogger("msgctl.eventlog")

MAX_PENDING = 10_000  # events handed out and not yet handled
# A fetch answered at each sequencer commit (the router's way, for whom every millisecond
# counts) was 80-100 requests a second on the broker at 200 msgs/s and push's process
# at 6-7% of a core; waiting for this many bytes or FETCH_WAIT_MS took push to 2.4% and
# the region's CPU down 4% of a core, for at most FETCH_WAIT_MS more before an offline
# device's notification (see docs/push.md)
FETCH_MIN_BYTES = 64 * 1024
FETCH_WAIT_MS = 100


def feed_config(bootstrap: str, group: str) -> dict[str, Any]:
    """The feed's consumer settings: committed events only, read in a few large fetches a
    second rather than one per sequencer commit."""
    return common(bootstrap) | {
        "group.id": group, "isolation.level": "read_committed",
        # a partition without an offset was anchored at its end by `start`: from then
        # on, everything after the committed offset is replayed, nothing skipped
        "auto.offset.reset": "earliest",
        # a fetch waits for FETCH_MIN_BYTES of committed events or FETCH_WAIT_MS,
        # whichever comes first, not for the next commit: a notification may wait
        # that long, but the broker answers a few fetches a second instead of one per
        # sequencer transaction (see FETCH_MIN_BYTES)
        "fetch.wait.max.ms": FETCH_WAIT_MS, "fetch.min.bytes": FETCH_MIN_BYTES,
        # static membership: the restarted process takes its partitions back at once
        # instead of waiting for the killed one's session to expire (a rebalance)
        "group.instance.id": group, "session.timeout.ms": 10_000,
        **STORED_OFFSETS, **stuck_watch(log, f"{group} feed"),
    }


class EventFeed:
    def __init__(self, bootstrap: str, group: str,
                 callback: Callable[[Event], asyncio.Future[None] | None],
                 topics: list[str] | None = None) -> None:
        self.consumer = Consumer(feed_config(bootstrap, group))
        self.topics = topics or [EVENTS]
        self.callback = callback
        self.worker = Worker(f"feed-{group}")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.worker.run(self._anchor)
        self.consumer.subscribe(self.topics)
        self._task = asyncio.create_task(run_or_exit(self._loop(), "event feed", log), name="feed")

    def _anchor(self) -> None:
        """Give every partition the group has no offset for its current end.

        A new group starts at "now" (no notifications for history), and a partition that
        gets its first event later is still read from its beginning after a restart.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                parts = []
                for topic in self.topics:
                    meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
                    if meta.error is not None:
                        raise KafkaException(meta.error)
                    parts += [TopicPartition(topic, p) for p in meta.partitions]
                missing = [tp for tp in self.consumer.committed(parts, timeout=30)
                           if tp.offset < 0]
                if missing:
                    ends = [TopicPartition(tp.topic, tp.partition,
                                           self.consumer.get_watermark_offsets(tp, 10)[1])
                            for tp in missing]
                    self.consumer.commit(offsets=ends, asynchronous=False)
                return
            except KafkaException as exc:
                # a fresh broker: the group coordinator may still be loading
                if time.monotonic() > deadline:
                    raise
                log.info("anchoring offsets: %s; retrying", exc)
                time.sleep(0.5)

    async def stop(self) -> None:
        await stop_loop(self._task, self.worker, self.consumer)

    async def _loop(self) -> None:
        # (topic, partition) -> offsets handed out, oldest first, with their futures
        pending: dict[tuple[str, int], deque[tuple[int, asyncio.Future[None] | None]]] = {}
        while True:
            waiting = sum(len(q) for q in pending.values())
            if waiting > MAX_PENDING:  # the handler is behind: let it catch up first
                oldest = next((f for q in pending.values() for _, f in q if f is not None
                               and not f.done()), None)
                if oldest is not None:
                    await asyncio.wait({oldest}, timeout=1.0)
            records = await take_or_wait(self.worker, self.consumer, 500, 0.1, "events", log)
            for rec in records:
                if rec.error() is not None:
                    continue
                handled: asyncio.Future[None] | None = None
                event: Event | None = None
                try:
                    event = env.decode_event(rec.value()).port_event()
                except Exception as exc:  # ValueError by contract; one record, not the feed
                    METRICS.errors.labels("bad_event_record").inc()
                    log.warning("skipping malformed event at %s/%s: %s", rec.partition(),
                                rec.offset(), exc)
                if event is not None:
                    try:
                        handled = self.callback(event)
                    except Exception:  # one bad event must not stop the feed
                        log.exception("event handler failed for %r", event)
                pending.setdefault((rec.topic(), rec.partition()), deque()).append(
                    (rec.offset(), handled))
            offsets = []
            for (topic, partition), queue in pending.items():
                last = None
                while queue and (queue[0][1] is None or queue[0][1].done()):
                    last = queue.popleft()[0]
                if last is not None:
                    offsets.append(TopicPartition(topic, partition, last + 1))
            if offsets:
                store_offsets(self.worker, self.consumer, offsets, log)
