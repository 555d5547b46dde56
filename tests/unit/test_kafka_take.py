"""Reading a batch (runtime.adapters.cluster.kafka.take): a consumer that librdkafka has
declared dead ends the process, however it says so.

After a broker restart, a static group member's commit can be fenced ("Static consumer
fenced by other consumer with same group.instance.id"): librdkafka then hands the
application an event whose code is `_FATAL` and whose fatal flag is not set. A router
that filtered it out as an ordinary error polled a dead consumer for good.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from runtime.adapters.cluster import kafka


class Event:
    def __init__(self, err: KafkaError | None) -> None:
        self._err = err

    def error(self) -> KafkaError | None:
        return self._err


class OneBatch:
    def __init__(self, *events: Event) -> None:
        self.events = list(events)

    def poll(self, timeout: float) -> Event | None:
        return self.events.pop(0) if self.events else None

    def consume(self, n: int, timeout: float) -> list[Event]:
        out, self.events = self.events[:n], self.events[n:]
        return out


def test_the_fatal_event_a_consumer_hands_out_is_fatal() -> None:
    event = KafkaError(KafkaError._FATAL)
    assert not event.fatal()  # what librdkafka's consumer event carries
    assert kafka.is_fatal(event)
    assert kafka.is_fatal(KafkaError(KafkaError._TIMED_OUT, fatal=True))
    assert not kafka.is_fatal(KafkaError(KafkaError._PARTITION_EOF))


@pytest.mark.parametrize("first", [True, False])
def test_take_raises_on_a_fatal_event_wherever_it_is_in_the_batch(first: bool) -> None:
    fatal = Event(KafkaError(KafkaError._FATAL))
    events = [fatal, Event(None)] if first else [Event(None), fatal]
    with pytest.raises(KafkaException):
        kafka.take(OneBatch(*events), 10, 0.1)  # type: ignore[arg-type]


def test_take_hands_back_ordinary_errors_with_the_records() -> None:
    eof = Event(KafkaError(KafkaError._PARTITION_EOF))
    assert len(kafka.take(OneBatch(Event(None), eof), 10, 0.1)) == 2  # type: ignore[arg-type]


def test_take_or_wait_exits_for_a_restart_on_a_fatal_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[str] = []

    def exit_for_restart(logger: Any, reason: str) -> None:
        exits.append(reason)
        raise SystemExit(70)

    monkeypatch.setattr(kafka, "exit_for_restart", exit_for_restart)
    worker = kafka.Worker("test-take")
    try:
        with pytest.raises(SystemExit):
            asyncio.run(kafka.take_or_wait(
                worker, OneBatch(Event(KafkaError(KafkaError._FATAL))),  # type: ignore[arg-type]
                10, 0.1, "msg.events", kafka.log))
    finally:
        worker.close()
    assert exits and "fatally" in exits[0]
