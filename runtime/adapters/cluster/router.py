"""Store writer and router of the cluster sequencer process.

Consumes committed events from `msg.events`, upserts messages and watermarks
into Cassandra (idempotent: a replay after a crash rewrites the same rows),
and only then hands each event to the gateways that hold a member's device,
plus the originating gateway of a send (it answers `sent`). Offsets are
committed after both, so a crash replays rather than skips; gateways drop
what they already delivered. Storing before routing means any message a
device sees can also be fetched by sync and gap fills.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import EVENTS, Worker, common, take
from runtime.adapters.cluster.redis_bus import RedisDirectory, gateway_channel
from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS
from runtime.sequencer import Conversations

log = logging.getLogger("msgctl.router")

RETRY_MAX = 5.0


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
        self.lag_ms = 0.0

    async def start(self) -> None:
        self.consumer = Consumer(common(self.bootstrap) | {
            "group.id": f"msgctl-router-{self.region}", "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5, "session.timeout.ms": 10_000,
        })
        self.consumer.subscribe(self.topics)
        self._task = asyncio.create_task(self._run(), name="router")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.worker.run(self.consumer.close)
        self.worker.close()

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            records = await self.worker.run(take, self.consumer, 1000, 0.1)
            records = [r for r in records if r.error() is None]
            if not records:
                continue
            items: list[dict[str, Any]] = []
            for rec in records:
                try:
                    items.append(env.loads(rec.value()))
                except ValueError:
                    log.warning("skipping unreadable event at %s/%s", rec.partition(),
                                rec.offset())
            delay = 0.2
            while True:
                try:
                    await self._handle(items)
                    break
                except Exception as exc:
                    # Cassandra or Redis away: hold the batch (offsets stay uncommitted)
                    log.warning("store/route of %d events failed, retrying in %.1fs: %s",
                                len(items), delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)
            await self.worker.run(lambda: self.consumer.commit(asynchronous=True))

    async def _handle(self, items: list[dict[str, Any]]) -> None:
        messages = [env.message_from_dict(i["m"]) for i in items if i.get("t") == "msg"]
        if messages:
            await self.store.upsert_messages(messages)
            self.lag_ms = time.time() * 1000 - messages[-1].ts
        marks: dict[tuple[str, str], Watermark] = {}
        for i in items:
            if i.get("t") == "receipt":
                k = (i["user"], i["conv"])
                old = marks.get(k, Watermark())
                marks[k] = Watermark(max(old.delivered, int(i["delivered"])),
                                     max(old.read, int(i["read"])))
        if marks:
            await asyncio.gather(*(self.store.set_watermark(u, c, m)
                                   for (u, c), m in marks.items()))
        await self.route(items)

    async def route(self, items: list[dict[str, Any]]) -> None:
        """Group the batch per gateway and publish one payload to each."""
        per_event: list[tuple[dict[str, Any], list[str], str | None]] = []
        users: set[str] = set()
        for i in items:
            kind = i.get("t")
            conv_id = i.get("m", {}).get("conv") if kind == "msg" else i.get("conv")
            conv = await self.conversations.get(conv_id) if conv_id else None
            if conv is None:
                continue
            if kind == "dup":
                original = await self.store.message(i["conv"], int(i["seq"]))
                payload = {"t": "dup", "conv": i["conv"], "from": i["from"], "cid": i["cid"],
                           "seq": i["seq"], "prev": i["prev"],
                           "m": env.message_to_dict(original) if original else None}
                per_event.append((payload, [], i.get("gw")))
                continue
            members = list(conv.members)
            if kind == "typing":
                members = [m for m in members if m != i["user"]]
            per_event.append((i, members, i.get("gw") if kind == "msg" else None))
            users.update(members)
        where = await self.directory.gateways_of(sorted(users)) if users else {}
        user_gateways: dict[str, list[str]] = defaultdict(list)
        for gateway, us in where.items():
            for u in us:
                user_gateways[u].append(gateway)
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for payload, members, origin in per_event:
            targets: dict[str, list[str]] = defaultdict(list)
            for m in members:
                for g in user_gateways.get(m, ()):
                    targets[g].append(m)
            if origin is not None:
                targets.setdefault(origin, [])
            for gateway, us in targets.items():
                out[gateway].append({"e": payload, "users": us})
        if out:
            pipe = self.directory.redis.pipeline(transaction=False)
            for gateway, events in out.items():
                pipe.publish(gateway_channel(self.region, gateway),
                             env.dumps({"t": "events", "events": events}))
            await pipe.execute()
        METRICS.routed.inc(len(per_event))
