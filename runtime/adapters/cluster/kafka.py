"""Kafka plumbing for the cluster family: topics, client settings, asyncio bridges.

confluent-kafka's calls block, so each client gets one worker thread: calls on a
client stay serialized (librdkafka's transactional API wants that) and the
event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.core.fetchwatch import FetchWatch

log = logging.getLogger("msgctl.eventlog")

INGRESS = "msg.ingress"
EVENTS = "msg.events"
SEQ_STATE = "msg.seq-state"
PRESENCE_EVENTS = "presence.events"  # each region's online/offline flips (mirrored out)
# typing, published by the gateways: apart from msg.events, which only the sequencer may
# write (docs/security.md); the routers read both, and both are mirrored out
TYPING = "msg.typing"


def mirrored(region: str, topic: str) -> str:
    """The name MirrorMaker 2 gives `topic` of `region` in another region's cluster."""
    return f"{region}.{topic}"

T = TypeVar("T")


# a process has one engine identity: its SSL settings (engine_auth.kafka_settings), set
# once at start by `configure`, go into every client it makes, to any region's Kafka
_security: dict[str, Any] = {}


# the sequencer's state: only the newest record per key matters
SEQ_STATE_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                    "segment.ms": "600000"}


def configure(security: dict[str, Any]) -> None:
    """The SSL settings every Kafka client of this process uses from now on."""
    _security.clear()
    _security.update(security)


def common(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "client.dns.lookup": "use_all_dns_ips",
            "socket.keepalive.enable": True, "reconnect.backoff.max.ms": 2000,
            # small requests (one send, one transaction step) go out at once
            "socket.nagle.disable": True, **_security}


# A consumer that commits what it has handled: it stores each offset once the records
# before it are handled (`store_offsets`), and librdkafka commits the stored offsets
# each second and on close. One commit request a second instead of one per batch (each
# a broker request, and at every sequencer transaction the router and the push feed
# each read a batch); a crash replays at most a second more, which they both tolerate.
STORED_OFFSETS: dict[str, Any] = {"enable.auto.commit": True, "auto.commit.interval.ms": 1000,
                                  "enable.auto.offset.store": False}


def store_offsets(worker: Worker, consumer: Consumer, offsets: list[TopicPartition],
                  logger: logging.Logger) -> None:
    """Mark `offsets` (each past the last handled record) for the next commit.

    Done on the consumer's worker thread, after the read in progress there, never on
    the event loop: librdkafka's offset store waits for a lock the worker's poll holds
    (13 ms on average and up to the whole poll timeout, measured under load), and every
    task of the process would wait with it."""
    worker.later(_store_offsets, consumer, offsets, logger)


def _store_offsets(consumer: Consumer, offsets: list[TopicPartition],
                   logger: logging.Logger) -> None:
    try:
        consumer.store_offsets(offsets=offsets)
    except (KafkaException, RuntimeError) as exc:
        # a partition revoked meanwhile (it is replayed), or the consumer closed
        logger.warning("storing offsets failed: %s", exc)


def ensure_topics(bootstrap: str, partitions: int, timeout: float = 30.0) -> list[str]:
    """Create the event topics if missing (explicit partitions); returns those created."""
    admin = AdminClient(common(bootstrap))
    meta = admin.list_topics(timeout=timeout)
    replicas = max(1, min(3, len(meta.brokers)))
    wanted = {
        INGRESS: {"retention.ms": str(7 * 86_400_000)},
        EVENTS: {"retention.ms": str(7 * 86_400_000)},
        SEQ_STATE: dict(SEQ_STATE_CONFIG),
        # the newest flip per user is the region's verdict on that user
        PRESENCE_EVENTS: {"cleanup.policy": "compact", "segment.ms": "600000"},
        # a typing event is stale within seconds
        TYPING: {"retention.ms": "3600000", "segment.ms": "600000"},
    }
    if replicas > 1:
        for conf in wanted.values():
            conf["min.insync.replicas"] = "2"
    missing = [NewTopic(name, num_partitions=partitions, replication_factor=replicas, config=conf)
               for name, conf in wanted.items() if name not in meta.topics]
    created: list[str] = []
    if not missing:
        return created
    for name, fut in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def take(consumer: Consumer, limit: int, timeout: float) -> list[Message]:
    """Up to `limit` records: waits for the first only, then takes what is already fetched.

    `Consumer.consume(n, timeout)` waits for n records or the whole timeout, which
    would add the timeout to the latency of every quiet-time message.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    records = [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]
    for rec in records:
        err = rec.error()
        if err is not None and is_fatal(err):  # the consumer is dead (e.g. a fenced static
            raise KafkaException(err)          # member after a broker restart)
    return records


def is_fatal(err: KafkaError) -> bool:
    """Whether `err` ends its client. A consumer hands a fatal error to the application
    as an event whose code is `_FATAL` but whose own fatal flag is not set: a router
    fenced after a broker restart ("Static consumer fenced ... OffsetCommit failed")
    polled a dead consumer for good, and no send was answered again."""
    return err.fatal() or err.code() == KafkaError._FATAL


# how often a watched consumer reports its state (librdkafka's statistics; each report is
# one small JSON document per consumer, handed over by its polls)
WATCH_INTERVAL_MS = 5000


def stuck_watch(logger: logging.Logger, what: str,
                limit: float = FetchWatch.limit) -> dict[str, Any]:
    """Consumer settings that end the process when an assigned partition stops fetching
    for good in a healthy group (`runtime.core.fetchwatch`): the supervisor restarts it
    with a fresh consumer, which resumes from the committed offsets."""
    watch = FetchWatch(limit)

    def on_stats(report: str) -> None:
        stuck = watch.observe_json(report, time.monotonic())
        if stuck is not None:
            exit_for_restart(logger, f"the {what} consumer stopped fetching: {stuck}")

    return {"statistics.interval.ms": WATCH_INTERVAL_MS, "stats_cb": on_stats}


def exit_for_restart(logger: logging.Logger, reason: str) -> NoReturn:
    """Leave at once: the supervisor restarts the process, which starts clean."""
    logger.error("%s; exiting for a restart", reason)
    logging.shutdown()
    os._exit(70)


async def run_or_exit(loop: Coroutine[Any, Any, None], what: str,
                      logger: logging.Logger) -> None:
    """Run a process's main loop; if it ever ends, end the process (a dead loop in a live
    process would still look ready)."""
    try:
        await loop
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        exit_for_restart(logger, f"{what} ended: {exc!r}")


async def stop_loop(task: asyncio.Task[None] | None, worker: Worker,
                    consumer: Consumer | None) -> None:
    """Cancel a consumer's loop, then close the consumer on its own thread and the thread."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if consumer is not None:
        await worker.run(consumer.close)
    worker.close()


async def take_or_wait(worker: Worker, consumer: Consumer, limit: int, timeout: float,
                       what: str, logger: logging.Logger) -> list[Message]:
    """`take` on the worker; a failed read is logged and answered with nothing after 1 s.
    A fatal error ends the process: the supervisor restarts it with a fresh consumer."""
    try:
        return await worker.run(take, consumer, limit, timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and is_fatal(err):
            exit_for_restart(logger, f"reading {what} failed fatally: {err}")
        logger.warning("reading %s failed, retrying: %s", what, exc)
        await asyncio.sleep(1.0)
        return []


def _log_failure(fut: concurrent.futures.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("a queued client call failed", exc_info=fut.exception())


class Worker:
    """One thread that runs a client's blocking calls in order."""

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` after the calls queued before it, without waiting for it; what it
        raises is logged."""
        with contextlib.suppress(RuntimeError):  # closed: the process is stopping
            self._pool.submit(fn, *args).add_done_callback(_log_failure)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# how long a producer waits for more records to share a request (librdkafka's and, since
# Kafka 4.0, the Java client's default). Against 1 ms, the gateway and the broker used
# about 8% of a core less at 1,000 and 2,000 msgs/s, for 2 ms more from a send to its
# batch at 1,000 and none at 200, where transactions start 8 ms apart anyway (see
# docs/cluster.md)
LINGER_MS = 5
# the sequencer's transactional producer: a transaction's produce requests go out as
# the batch is written, and its commit waits for them anyway
TXN_LINGER_MS = 1


class AsyncProducer:
    """An idempotent producer with acks=all; `send` returns a future of the broker's ack.

    After a broker crash an idempotent producer can hit a fatal error (out-of-order
    sequence for requests the broker never appended). Its queued messages then fail,
    their senders are told to retry, and the next `send` builds a fresh producer.
    """

    def __init__(self, bootstrap: str, *, linger_ms: int = LINGER_MS,
                 timeout_ms: int = 8000) -> None:
        self._config = common(bootstrap) | {
            "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms,
            "compression.type": "lz4", "message.timeout.ms": timeout_ms,
            "error_cb": self._on_error,
        }
        self._fatal = False
        self._producer = Producer(self._config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("producer failed fatally, replacing it: %s", err)
            self._fatal = True

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _replace(self) -> None:
        old = self._producer
        self._producer = Producer(self._config)
        self._fatal = False
        old.purge()
        old.poll(0)  # fail the purged messages' futures now

    def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._fatal:
            self._replace()

        def done(err: KafkaError | None, _msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, fut, err)

        try:
            self._producer.produce(topic, value, key, on_delivery=done)
        except (BufferError, KafkaException) as exc:
            fut.set_exception(exc)
        return fut

    def close(self, timeout: float = 5.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(1.0)


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaException(err))
