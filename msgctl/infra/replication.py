"""Replication lag of each MirrorMaker 2 link, read from the topics themselves.

For a link ``src -> dst`` two measures, both from record timestamps (MM2 keeps
the source's timestamp on the copy):

- ``lag_ms``: per partition of ``msg.events``, 0 if the newest committed event of
  ``src`` has its copy in ``dst`` (``<src>.msg.events``), else the age of the
  newest copy that did arrive: what is missing was written after it, so under a
  steady burst this is how far behind the link runs, and on a stopped link it
  grows with the clock. The worst partition counts.
- ``heartbeat_age_ms``: age of the newest record of ``<src>.heartbeats`` in
  ``dst``. MM2 writes a heartbeat into every cluster each second and mirrors
  them like any topic, so on an idle link this still moves.

Those heartbeats are written into ``src`` by the MM2 of the other direction, so
a stale copy says something about this link only while the originals in
``src`` are fresh. A link is ``stalled`` when it is behind by more than
STALL_MS, or fresh heartbeats in ``src`` stopped arriving in ``dst`` (older than
HEARTBEAT_STALE_MS), or none ever arrived, or it cannot be read at all.
The arithmetic is `assess`, pure; `measure` does the reading.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

STALL_MS = 5_000
HEARTBEAT_STALE_MS = 10_000
TAIL = 20  # records read back from the end of each partition to find the newest event
EVENTS = "msg.events"


@dataclass
class LinkLag:
    source: str
    target: str
    lag_ms: int | None
    heartbeat_age_ms: int | None
    stalled: bool
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(source: str, target: str, newest_src: dict[int, int], newest_dst: dict[int, int],
           heartbeat_ts: int | None, now_ms: int, emitted_ts: int | None = None) -> LinkLag:
    """Lag from the newest timestamps per partition (missing: nothing there).

    `heartbeat_ts`: newest heartbeat copy in the target; `emitted_ts`: newest
    original in the source (None: unknown, taken as fresh)."""
    lag = 0
    for partition, ts in newest_src.items():
        copy = newest_dst.get(partition)
        if copy is None:
            lag = max(lag, now_ms - ts)  # nothing has arrived, the newest is at least that late
        elif copy < ts:
            lag = max(lag, now_ms - copy)
    age = None if heartbeat_ts is None else max(0, now_ms - heartbeat_ts)
    emitting = emitted_ts is None or now_ms - emitted_ts <= HEARTBEAT_STALE_MS
    stalled = lag > STALL_MS or age is None or (emitting and age > HEARTBEAT_STALE_MS)
    return LinkLag(source, target, lag, age, stalled)


def _newest(bootstrap: str, topic: str, timeout: float) -> dict[int, int]:
    """The timestamp of the newest committed record of each partition (ms)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"msgctl-lag-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "log_level": 0, "fetch.wait.max.ms": 10})
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return {}
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout, cached=False)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, max(low, high - TAIL)))
        if not starts:
            return {}
        consumer.assign(starts)
        newest: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        pending, idle = set(ends), 0
        # until every partition is read to its end; a transaction's trailing marker is
        # never handed out, so a few quiet polls also end it
        while pending and idle < 3 and time.monotonic() < deadline:
            records = consumer.consume(500, 0.1)
            idle = 0 if records else idle + 1
            for rec in records:
                if rec.error() is None:
                    newest[rec.partition()] = max(newest.get(rec.partition(), 0),
                                                  rec.timestamp()[1])
            for tp in consumer.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        return newest
    finally:
        consumer.close()


def measure(source: str, source_bootstrap: str, target: str, target_bootstrap: str,
            timeout: float = 3.0) -> LinkLag:
    """Read both ends of the link `source -> target` now."""
    try:
        src = _newest(source_bootstrap, EVENTS, timeout)
        dst = _newest(target_bootstrap, f"{source}.{EVENTS}", timeout)
        beats = _newest(target_bootstrap, f"{source}.heartbeats", timeout)
        emitted = _newest(source_bootstrap, "heartbeats", timeout)
    except Exception as exc:  # noqa: BLE001 - an unreachable cluster is the answer
        return LinkLag(source, target, None, None, True, str(exc) or type(exc).__name__)
    return assess(source, target, src, dst, max(beats.values()) if beats else None,
                  int(time.time() * 1000), max(emitted.values()) if emitted else None)


def links(regions: list[dict[str, Any]]) -> list[LinkLag]:
    """Every ordered pair of the deployment's regions that have a Kafka endpoint."""
    kafka = {r["name"]: r.get("engines", {}).get("kafka") for r in regions}
    kafka = {name: bootstrap for name, bootstrap in kafka.items() if bootstrap}
    return [measure(src, kafka[src], dst, kafka[dst])
            for src in kafka for dst in kafka if src != dst]
