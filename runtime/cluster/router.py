"""Store writer and router of the cluster sequencer process.

Consumes committed events from `msg.events`, upserts messages and watermarks
into Cassandra (idempotent: a replay after a crash rewrites the same rows),
and only then hands each event to the gateways that hold a member's device,
plus the originating gateway of a send (it answers `sent`). Offsets are
committed after both (stored, and committed by librdkafka each second: a crash
replays at most that much more), so a crash replays rather than skips; gateways
drop what they already delivered. Storing before routing means any message a
device sees can also be fetched by sync and gap fills.

Batches are pipelined: up to `PIPELINE` batches read ahead have their messages
written while the earlier ones are routed, so under load the store's round
trips overlap instead of adding up. A batch's heads are written once its own
messages and every earlier batch's are stored (a head never points past what a
reader can fetch). Routing stays in batch order: the oldest batch is routed once
it is stored, together with the batches after it whose writes are done by then
(watermarks stored, events published, offsets committed); it never waits for a
later batch's write.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Message as Record
from redis.exceptions import RedisError

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.cassandra_store import StoreUnavailable
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
from runtime.adapters.cluster.redis_bus import RedisDirectory, gateway_channel
from runtime.conversations import Conversations
from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS
from runtime.ports import Message

log = logging.getLogger("msgctl.router")

RETRY_MAX = 5.0
# batches read ahead whose messages are being written while earlier batches are routed
PIPELINE = 4
# how long the in-order pass waits for a batch's store read ahead before writing it
# again itself (each of the store's requests times out well before this)
STORE_WAIT = 60.0


def next_offsets(records: list[Record]) -> list[TopicPartition]:
    """The offsets to commit once `records` are handled: past the last of each partition."""
    last: dict[tuple[str, int], int] = {}
    for rec in records:
        # a record read without error always has its topic, partition and offset
        key = (rec.topic() or "", rec.partition() or 0)
        last[key] = max(last.get(key, -1), rec.offset() or 0)
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in last.items()]


def _succeeded(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _release(storing: dict[str, asyncio.Task[None]], convs: set[str],
             through: asyncio.Task[None], _finished: asyncio.Future[None]) -> None:
    """The in-order pass is done with a batch (its messages and heads are stored, written
    again if they had failed): its conversations no longer wait for it. (A batch stored
    at its first try lets them go earlier: `ready` takes a `through` that succeeded.)"""
    for conv in convs:
        if storing.get(conv) is through:
            del storing[conv]


def _retrieve(task: asyncio.Task[None]) -> None:
    """Retrieve a task's outcome nobody awaits (else asyncio logs it as never retrieved)."""
    if not task.cancelled():
        task.exception()


class StoreRouter:
    def __init__(self, bootstrap: str, region: str, store: Any, conversations: Conversations,
                 directory: RedisDirectory, *, topics: list[str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.region = region
        self.store = store
        self.conversations = conversations
        self.directory = directory
        self.topics = topics or [EVENTS]
        self.worker = Worker("router-kafka")
        self.consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self) -> None:
        self.consumer = Consumer(common(self.bootstrap) | {
            "group.id": f"msgctl-router-{self.region}", "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            # a waiting read_committed fetch is answered as soon as the sequencer's commit
            # markers land (route lag 11 ms at 20 msgs/s with a 100 ms wait), so the wait
            # only bounds empty polls: at 10 ms each idle consumer cost the one-core broker
            # a hundred fetch requests a second
            "fetch.wait.max.ms": 100, "session.timeout.ms": 10_000,
            # static membership: a restarted sequencer process gets its partitions back at
            # once instead of after the killed member's session expires
            "group.instance.id": f"msgctl-router-{self.region}",
            # a mirrored topic appears once MirrorMaker 2 first replicates into it
            "topic.metadata.refresh.interval.ms": 2000,
            **STORED_OFFSETS, **stuck_watch(log, "router"),
        })
        self.consumer.subscribe(self.topics)
        self._task = asyncio.create_task(run_or_exit(self._loop(), "router loop", log),
                                         name="router")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await stop_loop(self._task, self.worker, self.consumer)

    async def _loop(self) -> None:
        # (the records read, their events, their store, done once routed) per batch
        ahead: asyncio.Queue[tuple[list[Record], list[env.EventRecord],
                                   asyncio.Task[None] | None, asyncio.Future[None]]] = \
            asyncio.Queue(PIPELINE)
        # either one failing ends the other and the process (run_or_exit)
        await asyncio.gather(self._read_ahead(ahead), self._in_order(ahead))

    async def _read_ahead(self, ahead: asyncio.Queue[Any]) -> None:
        """Read batches; start storing each one's messages at once."""
        assert self.consumer is not None
        # done once the messages of every batch read so far are stored, and whether the
        # in-order pass has finished the last batch with messages (the one `through` is
        # of: a batch without messages, say only duplicates, does not move either)
        through: asyncio.Task[None] | None = None
        finished: asyncio.Future[None] | None = None
        # conv -> `through` of the newest batch read with a message of it: its head may
        # go beside the messages (one write) only once that one is done
        storing: dict[str, asyncio.Task[None]] = {}
        while True:
            records = await take_or_wait(self.worker, self.consumer, 1000, 0.1,
                                         ",".join(self.topics), log)
            if not records:
                continue
            read = [rec for rec in records if rec.error() is None]
            items: list[env.EventRecord] = []
            for rec in read:
                try:
                    items.append(env.decode_event(rec.value()))
                except Exception as exc:  # ValueError by contract; one record, not the batch
                    METRICS.errors.labels("bad_event_record").inc()
                    log.warning("skipping malformed event at %s/%s: %s", rec.partition(),
                                rec.offset(), exc)
            messages = [i.message for i in items if isinstance(i, env.MessageRecord)]
            early = None
            done = asyncio.get_running_loop().create_future()
            if messages:
                convs = {m.conv for m in messages}
                ready = {c for c in convs if c not in storing or _succeeded(storing[c])}
                own = asyncio.create_task(self._store_messages(messages, ready))
                # waits, if the previous batch with messages failed, for the in-order
                # pass to finish that batch: never a later one, which may be routed in
                # the same round as this one (that wait would never end)
                through = asyncio.create_task(self._stored_through(own, through, finished))
                early = asyncio.create_task(self._heads(messages, own, through))
                finished = done
                for conv in convs:
                    storing[conv] = through
                # one whose store failed holds its conversations until the in-order pass
                # has written it again
                done.add_done_callback(functools.partial(_release, storing, convs, through))
            await ahead.put((read, items, early, done))

    async def _store_messages(self, messages: list[Message], heads: set[str]) -> set[str]:
        """Store `messages`, the heads of `heads` beside them where the store can; those
        it wrote."""
        METRICS.route_lag_seconds.observe(max(0.0, time.time() - messages[0].ts / 1000))
        t0 = time.perf_counter()
        inline: set[str] = await self.store.store_messages(messages, heads)
        METRICS.store_seconds.observe(time.perf_counter() - t0)
        return inline

    @staticmethod
    async def _stored_through(own: asyncio.Task[set[str]], before: asyncio.Task[None] | None,
                              finished: asyncio.Future[None] | None) -> None:
        """Done when this batch's messages and every earlier batch's are stored; raises
        when this batch's store failed. An earlier batch whose store failed is written
        again by the in-order pass: then this waits for that pass to have finished the
        previous batch with messages (`finished`, of the batch `before` is of), not
        failing every batch after."""
        await own
        if before is not None:
            try:
                await before
                return
            except Exception:
                pass
            assert finished is not None  # set for every batch after the first
            await finished

    async def _heads(self, messages: list[Message], own: asyncio.Task[set[str]],
                     through: asyncio.Task[None]) -> None:
        """A batch's heads not written beside its messages, once no head can point past a
        message not stored yet. Heads only grow (written at their value's timestamp), so
        these may land in any order."""
        await through
        inline = own.result()
        rest = [m for m in messages if m.conv not in inline]
        if rest:
            await self.store.set_heads(rest)

    async def _in_order(self, ahead: asyncio.Queue[Any]) -> None:
        """Route the batches in the order read: the oldest once it is stored, with the
        ones after it whose store is done already (never waiting for a later batch's
        store, which would hold the oldest's messages for it); then commit."""
        assert self.consumer is not None
        consumer = self.consumer
        # batches taken off the queue, not routed yet; at most PIPELINE, so that with the
        # queue's PIPELINE no more than twice that many are read ahead, as before
        waiting: collections.deque[Any] = collections.deque()
        while True:
            if not waiting:
                waiting.append(await ahead.get())
            batches = [waiting.popleft()]
            stored = await self._stored(batches[0][2])
            while len(waiting) < PIPELINE and not ahead.empty():
                waiting.append(ahead.get_nowait())
            while stored and waiting and (waiting[0][2] is None or waiting[0][2].done()):
                batches.append(waiting.popleft())
                stored = await self._stored(batches[-1][2])
            items = [item for _, batch_items, _, _ in batches for item in batch_items]
            if items:
                await self._handle_until_done(items, stored)
            for *_, finished in batches:
                finished.set_result(None)
            offsets = next_offsets([rec for read, *_ in batches for rec in read])
            if offsets:
                store_offsets(self.worker, consumer, offsets, log)

    @staticmethod
    async def _stored(early: asyncio.Task[None] | None) -> bool:
        """Whether a batch's store read ahead (its messages and heads) succeeded; False
        makes the in-order pass write its round again. Bounded: were a store read ahead
        ever to wait on something that waits on this pass, writing again in order ends
        it."""
        if early is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(early), STORE_WAIT)
            return True
        except TimeoutError:
            METRICS.errors.labels("store_ahead_stalled").inc()
            log.warning("store of a batch read ahead not done in %.0fs; "
                        "writing it again in order", STORE_WAIT)
            early.add_done_callback(_retrieve)
            return False
        except Exception as exc:  # written again by the in-order pass, with retries
            log.debug("store of a batch read ahead failed: %r", exc)
            return False

    async def _handle_until_done(self, items: list[env.EventRecord],
                                 stored: bool = False) -> None:
        """`_handle` until it succeeds (`stored`: the messages and heads are written)."""
        delay = 0.2
        while True:
            try:
                await self._handle(items, stored)
                return
            except (StoreUnavailable, RedisError, OSError, TimeoutError) as exc:
                # Cassandra or Redis away: hold the batch (offsets stay uncommitted)
                log.warning("store/route of %d events failed, retrying in %.1fs: %s",
                            len(items), delay, exc)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
            except Exception:
                # not an outage: find the event that fails and skip it alone
                log.exception("store/route of %d events failed; trying them one by one",
                              len(items))
                for item in items:
                    try:
                        await self._handle([item])
                    except (StoreUnavailable, RedisError, OSError, TimeoutError):
                        raise
                    except Exception:
                        log.exception("skipping an event that cannot be stored: %r", item)
                return

    async def _handle(self, items: list[env.EventRecord], stored: bool = False) -> None:
        messages = [i.message for i in items if isinstance(i, env.MessageRecord)]
        if messages and not stored:
            t0 = time.perf_counter()
            await self.store.upsert_messages(messages)
            METRICS.store_seconds.observe(time.perf_counter() - t0)
        marks: dict[tuple[str, str], Watermark] = {}
        for i in items:
            if isinstance(i, env.ReceiptRecord):
                k = (i.receipt.user, i.receipt.conv)
                old = marks.get(k, Watermark())
                marks[k] = Watermark(max(old.delivered, i.delivered), max(old.read, i.read))
        if marks:
            await asyncio.gather(*(self.store.set_watermark(u, c, m)
                                   for (u, c), m in marks.items()))
        await self.route(items)

    async def route(self, items: list[env.EventRecord]) -> None:
        """Group the batch per gateway and publish one payload to each (each event encoded
        once, however many gateways it goes to)."""
        per_event: list[tuple[env.RoutedPayload, list[str], str | None]] = []
        users: set[str] = set()
        conv_ids = [i.message.conv if isinstance(i, env.MessageRecord) else
                    i.receipt.conv if isinstance(i, env.ReceiptRecord) else
                    i.event.conv if isinstance(i, env.TypingRecord) else i.conv
                    for i in items]
        # the conversations not cached (new ones) are read together
        convs = await self.conversations.get_many(conv_ids)
        for i, conv_id in zip(items, conv_ids, strict=True):
            conv = convs.get(conv_id)
            if conv is None:
                continue
            # the gateway waiting for this send's `sent` is in the region that sent it
            # (a conversation homed elsewhere comes back here mirrored)
            origin = None
            if isinstance(i, env.MessageRecord | env.DuplicateRecord) and i.gw:
                origin = i.gw if (i.rg or self.region) == self.region else None
            if isinstance(i, env.DuplicateRecord):
                if origin is None:
                    continue  # only its sender's gateway needs a duplicate's answer
                # the `sent` repeats the original's seq, prev and ts: the stored copy
                original = await self.store.message(i.conv, i.seq)
                if original is None or (original.sender, original.cid) != (i.sender, i.cid):
                    # nothing made up: the sender times out and retries with the same cid
                    METRICS.errors.labels("dup_without_original").inc()
                    log.warning("duplicate %s/%s (seq %d) has no stored original; its "
                                "sender will retry", i.conv, i.cid, i.seq)
                    continue
                per_event.append((env.DuplicateAnswer(original), [], origin))
                continue
            members = list(conv.members)
            if isinstance(i, env.TypingRecord):
                members = [m for m in members if m != i.event.user]
            per_event.append((i, members, origin))
            users.update(members)
        where = await self.directory.gateways_of(sorted(users)) if users else {}
        user_gateways: dict[str, list[str]] = defaultdict(list)
        for gateway, us in where.items():
            for u in us:
                user_gateways[u].append(gateway)
        out: dict[str, list[env.RoutedEvent]] = defaultdict(list)
        for payload, members, origin in per_event:
            targets: dict[str, list[str]] = defaultdict(list)
            for m in members:
                for g in user_gateways.get(m, ()):
                    targets[g].append(m)
            if origin is not None:
                targets.setdefault(origin, [])
            for gateway, us in targets.items():
                out[gateway].append(env.RoutedEvent(payload, tuple(us)))
        if out:
            pipe = self.directory.redis.pipeline(transaction=False)
            for gateway, events in out.items():
                pipe.publish(gateway_channel(self.region, gateway),
                             env.EventsBatch(tuple(events)).encode())
            await pipe.execute()
            sends = [i.message.ts for i in items if isinstance(i, env.MessageRecord)]
            if sends:
                METRICS.publish_lag_seconds.observe(max(0.0, time.time() - min(sends) / 1000))
        METRICS.routed.inc(len(per_event))
