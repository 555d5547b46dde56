"""Replication lag of each MirrorMaker 2 link, read from the topics themselves.

For a link ``src -> dst`` two measures, both from record timestamps (MM2 keeps
the source's timestamp on the copy):

- ``lag_ms``: per partition of ``msg.events``, the age of the oldest committed
  event of ``src`` whose copy has not reached ``dst`` (``<src>.msg.events``):
  events newer than the newest copy are the missing ones. 0 when nothing is
  missing; on a stopped link it grows with the clock. Only the last TAIL events
  of a partition are looked at, so a link further behind reads as the age of
  the TAIL-th newest. The worst partition counts. A partition of the copy that
  could not be read to its end in time says nothing (its newest copy is
  unknown) and is left out, rather than read as never copied.
- ``heartbeat_age_ms``: age of the newest record of ``<src>.heartbeats`` in
  ``dst``. MM2 writes a heartbeat into every cluster each second and mirrors
  them like any topic, so on an idle link this still moves.

Those heartbeats are written into ``src`` by the MM2 of the other direction, so
a stale copy says something about this link only while the originals in
``src`` are fresh. A link is ``stalled`` when it is behind by more than
STALL_MS, or fresh heartbeats in ``src`` stopped arriving in ``dst`` (older than
HEARTBEAT_STALE_MS), or none ever arrived, or it cannot be read at all.
The arithmetic is `assess`, pure; `links` does the reading (`LagReader` for
repeated reads, over Kafka clients it keeps).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

STALL_MS = 5_000
HEARTBEAT_STALE_MS = 10_000
TAIL = 200  # records read back from the end of each partition
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


def assess(source: str, target: str, src_tail: dict[int, list[int]],
           newest_dst: dict[int, int], heartbeat_ts: int | None, now_ms: int,
           emitted_ts: int | None = None, unread_dst: frozenset[int] = frozenset()) -> LinkLag:
    """Lag from the source's recent timestamps and the target's newest, per partition.

    `heartbeat_ts`: newest heartbeat copy in the target; `emitted_ts`: newest
    original in the source (None: unknown, taken as fresh); `unread_dst`: target
    partitions whose newest copy is unknown (their read did not finish)."""
    lag = 0
    for partition, stamps in src_tail.items():
        if partition in unread_dst:
            continue
        copy = newest_dst.get(partition, -1)
        missing = [ts for ts in stamps if ts > copy]
        if missing:
            lag = max(lag, now_ms - min(missing))
    age = None if heartbeat_ts is None else max(0, now_ms - heartbeat_ts)
    emitting = emitted_ts is None or now_ms - emitted_ts <= HEARTBEAT_STALE_MS
    stalled = lag > STALL_MS or age is None or (emitting and age > HEARTBEAT_STALE_MS)
    return LinkLag(source, target, lag, age, stalled)


class _TailReader:
    """One Kafka consumer reading the tail of one topic, kept between reads.

    A reader that samples the lag every half second (the benchmarks, the drills)
    would otherwise make a new client, with its TLS handshakes, for every topic of
    every sample: at 500 msgs/s over two regions those handshakes were a third of a
    Kafka broker's CPU, and so part of the latency the sampling measured."""

    def __init__(self, bootstrap: str, topic: str, client: dict[str, Any] | None) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"msgctl-lag-{uuid.uuid4()}",
            "enable.auto.commit": False, "isolation.level": "read_committed",
            "log_level": 0, "fetch.wait.max.ms": 10, **(client or {})})

    def read(self, timeout: float) -> tuple[dict[int, list[int]], frozenset[int]]:
        """Timestamps (ms) of the last TAIL committed records of each partition, and the
        partitions whose position stayed short of their end."""
        from confluent_kafka import TopicPartition

        consumer, topic = self.consumer, self.topic
        meta = consumer.list_topics(topic, timeout=timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return {}, frozenset()
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout, cached=False)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, max(low, high - TAIL)))
        if not starts:
            return {}, frozenset()
        consumer.assign(starts)
        try:
            stamps: dict[int, list[int]] = {}
            deadline = time.monotonic() + timeout
            pending, idle = set(ends), 0
            # until every partition is read to its end; a transaction's trailing marker
            # is never handed out, so a few quiet polls also end it
            while pending and idle < 3 and time.monotonic() < deadline:
                records = consumer.consume(500, 0.1)
                idle = 0 if records else idle + 1
                for rec in records:
                    if rec.error() is None:
                        stamps.setdefault(rec.partition() or 0, []).append(rec.timestamp()[1])
                for tp in consumer.position([TopicPartition(topic, p) for p in list(pending)]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
            # partitions left short of their end: in a sequencer's topic often only a
            # transaction's trailing marker; in a copy (MM2 writes no transactions) unread
            return stamps, frozenset(pending)
        finally:
            # the next read starts from its own offsets, with nothing fetched for this one
            consumer.unassign()

    def close(self) -> None:
        self.consumer.close()


class LagReader:
    """Reads every link's lag (`links`) as often as asked, over Kafka clients it keeps
    open (one per topic read) until `close`. A client whose read failed is closed and
    made anew at the next read."""

    def __init__(self, regions: list[dict[str, Any]], timeout: float = 3.0) -> None:
        kafka = {r["name"]: r.get("engines", {}).get("kafka") for r in regions}
        self.kafka: dict[str, str] = {name: b for name, b in kafka.items() if b}
        self.clients = {r["name"]: r.get("kafka_client") for r in regions}
        self.timeout = timeout
        self.pairs = [(src, dst) for src in self.kafka for dst in self.kafka if src != dst]
        reads = {(name, topic) for name in self.kafka for topic in (EVENTS, "heartbeats")}
        reads |= {(dst, f"{src}.{topic}") for src, dst in self.pairs
                  for topic in (EVENTS, "heartbeats")}
        self.reads = sorted(reads)
        self._readers: dict[tuple[str, str], _TailReader] = {}
        self._pool = ThreadPoolExecutor(max_workers=min(16, len(self.reads) or 1))

    def _read(self, key: tuple[str, str]) -> tuple[dict[int, list[int]], frozenset[int]]:
        reader = self._readers.get(key)
        if reader is None:
            name, topic = key
            reader = self._readers[key] = _TailReader(self.kafka[name], topic,
                                                      self.clients[name])
        try:
            return reader.read(self.timeout)
        except Exception:
            del self._readers[key]
            reader.close()
            raise

    def links(self) -> list[LinkLag]:
        """Every ordered pair of the regions that have a Kafka endpoint. Each topic is read
        once, all of them side by side: a call takes about one read, not one per link."""
        futures = {key: self._pool.submit(self._read, key) for key in self.reads}
        # every read ends before any is looked at: a reader is never used by two at once
        wait(futures.values())
        out = []
        now = int(time.time() * 1000)
        for src, dst in self.pairs:
            try:
                read = {k: futures[k].result() for k in ((src, EVENTS), (src, "heartbeats"),
                                                         (dst, f"{src}.{EVENTS}"),
                                                         (dst, f"{src}.heartbeats"))}
            except Exception as exc:  # noqa: BLE001 - an unreachable cluster is the answer
                out.append(LinkLag(src, dst, None, None, True, str(exc) or type(exc).__name__))
                continue
            got = {k: stamps for k, (stamps, _) in read.items()}
            newest = {k: {p: max(ts) for p, ts in v.items()} for k, v in got.items()}
            beats, emitted = newest[(dst, f"{src}.heartbeats")], newest[(src, "heartbeats")]
            out.append(assess(src, dst, got[(src, EVENTS)], newest[(dst, f"{src}.{EVENTS}")],
                              max(beats.values()) if beats else None, now,
                              max(emitted.values()) if emitted else None,
                              unread_dst=read[(dst, f"{src}.{EVENTS}")][1]))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> LagReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def links(regions: list[dict[str, Any]], timeout: float = 3.0) -> list[LinkLag]:
    """Every link's lag, read once (`LagReader` keeps its clients for repeated reads)."""
    with LagReader(regions, timeout) as reader:
        return reader.links()
