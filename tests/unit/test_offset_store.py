"""Consumers' offsets are stored on their worker thread, never on the event loop.

Under load librdkafka's offset store waited for a lock its poll on the worker
held (13 ms on average, up to the whole poll timeout), and the sequencer
process's event loop, which also runs the sequencer and the router, waited
with it: send -> deliver p50 went from 80 to 40 ms once it stopped.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from runtime.adapters.cluster.kafka import Worker, store_offsets

log = logging.getLogger("test")


class SlowConsumer:
    """Holds its lock for the whole of `poll`, as librdkafka does for the store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: list[tuple[str, list[TopicPartition]]] = []
        self.fail: Exception | None = None

    def poll(self, timeout: float) -> None:
        with self.lock:
            time.sleep(timeout)

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        with self.lock:
            if self.fail is not None:
                raise self.fail
            self.stored.append((threading.current_thread().name, offsets))


def test_the_caller_does_not_wait_for_a_poll_in_progress() -> None:
    worker, consumer = Worker("test-consumer"), SlowConsumer()
    try:
        worker.later(consumer.poll, 0.3)
        time.sleep(0.02)  # the poll holds the lock now
        t0 = time.monotonic()
        store_offsets(worker, consumer, [TopicPartition("t", 0, 5)], log)
        assert time.monotonic() - t0 < 0.1
        assert consumer.stored == []
        deadline = time.monotonic() + 5
        while not consumer.stored and time.monotonic() < deadline:
            time.sleep(0.01)
        # after the poll, in order, on the worker's thread
        [(thread, offsets)] = consumer.stored
        assert thread.startswith("test-consumer")
        assert [(tp.partition, tp.offset) for tp in offsets] == [(0, 5)]
    finally:
        worker.close()


def test_a_failed_or_late_store_is_logged_not_raised(caplog) -> None:
    worker, consumer = Worker("test-consumer"), SlowConsumer()
    consumer.fail = KafkaException(KafkaError(KafkaError._STATE))
    store_offsets(worker, consumer, [TopicPartition("t", 0, 5)], log)
    deadline = time.monotonic() + 5
    while "storing offsets failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "storing offsets failed" in caplog.text
    worker.close()
    # the process is stopping: nothing to store into, nothing raised
    store_offsets(worker, consumer, [TopicPartition("t", 0, 6)], log)
