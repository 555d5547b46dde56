"""The lag arithmetic of `msgctl status` per MirrorMaker 2 link, and how a `LagReader`
keeps its Kafka clients between reads (no Kafka needed: stand-in tail readers)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from msgctl.infra import replication
from msgctl.infra.replication import HEARTBEAT_STALE_MS, STALL_MS, LagReader, assess

NOW = 1_000_000


def test_caught_up_link_has_no_lag() -> None:
    lag = assess("a", "b", {0: [NOW - 60_000, NOW - 50_000], 3: [NOW - 10]},
                 {0: NOW - 50_000, 3: NOW - 10}, NOW - 400, NOW)
    assert (lag.lag_ms, lag.heartbeat_age_ms, lag.stalled) == (0, 400, False)


def test_lag_is_the_age_of_the_oldest_event_not_copied_yet() -> None:
    # partition 1: the copy stopped at NOW-900; NOW-700 and NOW-5 are missing
    lag = assess("a", "b", {0: [NOW - 10], 1: [NOW - 900, NOW - 700, NOW - 5]},
                 {0: NOW - 10, 1: NOW - 900}, NOW - 300, NOW)
    assert lag.lag_ms == 700 and not lag.stalled


def test_an_event_just_written_to_an_idle_partition_is_not_a_stall() -> None:
    # the partition's previous event is an hour old; the new one is 3 ms old
    lag = assess("a", "b", {0: [NOW - 3_600_000, NOW - 3]}, {0: NOW - 3_600_000}, NOW, NOW)
    assert lag.lag_ms == 3 and not lag.stalled


def test_a_stopped_link_is_stalled_by_lag_or_by_heartbeats() -> None:
    assert assess("a", "b", {0: [NOW - STALL_MS - 1]}, {}, NOW, NOW).stalled
    assert assess("a", "b", {0: [NOW - 10]}, {}, NOW, NOW).lag_ms == 10
    idle = assess("a", "b", {}, {}, NOW - HEARTBEAT_STALE_MS - 1, NOW)
    assert idle.lag_ms == 0 and idle.stalled
    assert assess("a", "b", {}, {}, None, NOW).stalled  # never a heartbeat: not running


def test_stale_heartbeats_count_only_while_the_source_still_gets_fresh_ones() -> None:
    old = NOW - HEARTBEAT_STALE_MS - 5_000
    # the other direction's MM2 is down: no fresh originals, so the copies say nothing
    assert not assess("a", "b", {}, {}, old, NOW, emitted_ts=old).stalled
    # originals are fresh but their copies stopped: this link is down
    assert assess("a", "b", {}, {}, old, NOW, emitted_ts=NOW - 200).stalled


def test_a_copy_partition_not_read_in_time_is_left_out_not_read_as_never_copied() -> None:
    """A read of the target that ran out of time for partition 2 must not report the
    age of the oldest source record there (a one-off 333 s seen in a drill)."""
    src = {0: [NOW - 30], 2: [NOW - 333_000, NOW - 20]}
    lag = assess("a", "b", src, {0: NOW - 30}, NOW - 100, NOW, NOW, unread_dst=frozenset({2}))
    assert lag.lag_ms == 0 and not lag.stalled
    assert assess("a", "b", src, {0: NOW - 30}, NOW - 100, NOW, NOW).lag_ms == 333_000


class FakeTail:
    """Stands in for one kept Kafka client: every topic holds one fresh record."""

    made: list[FakeTail] = []
    fail: set[str] = set()  # topics whose next read fails once

    def __init__(self, bootstrap: str, topic: str, client: dict[str, Any] | None) -> None:
        self.bootstrap, self.topic, self.reads, self.closed = bootstrap, topic, 0, False
        FakeTail.made.append(self)

    def read(self, timeout: float) -> tuple[dict[int, list[int]], frozenset[int]]:
        assert not self.closed
        self.reads += 1
        if self.topic in FakeTail.fail:
            FakeTail.fail.discard(self.topic)
            raise RuntimeError(f"{self.topic} unreachable")
        return {0: [int(time.time() * 1000) - 5]}, frozenset()

    def close(self) -> None:
        self.closed = True


REGIONS = [{"name": "a", "engines": {"kafka": "ka:9092"}},
           {"name": "b", "engines": {"kafka": "kb:9092"}}]


@pytest.fixture
def fake_tails(monkeypatch: pytest.MonkeyPatch) -> type[FakeTail]:
    FakeTail.made, FakeTail.fail = [], set()
    monkeypatch.setattr(replication, "_TailReader", FakeTail)
    return FakeTail


def test_a_lag_reader_reads_every_topic_over_the_same_clients_each_time(
        fake_tails: type[FakeTail]) -> None:
    with LagReader(REGIONS) as reader:
        for _ in range(3):
            links = reader.links()
            assert [(x.source, x.target, x.stalled) for x in links] == \
                [("a", "b", False), ("b", "a", False)]
        # one client per topic read: each side's own two topics and the other's copies
        assert len(fake_tails.made) == 8
        assert {(t.bootstrap, t.topic) for t in fake_tails.made} == {
            ("ka:9092", "msg.events"), ("ka:9092", "heartbeats"),
            ("kb:9092", "msg.events"), ("kb:9092", "heartbeats"),
            ("kb:9092", "a.msg.events"), ("kb:9092", "a.heartbeats"),
            ("ka:9092", "b.msg.events"), ("ka:9092", "b.heartbeats")}
        assert all(t.reads == 3 and not t.closed for t in fake_tails.made)
    assert all(t.closed for t in fake_tails.made)


def test_a_client_whose_read_failed_is_closed_and_made_anew(
        fake_tails: type[FakeTail]) -> None:
    with LagReader(REGIONS) as reader:
        fake_tails.fail.add("a.msg.events")
        failed = {(x.source, x.target): x for x in reader.links()}
        assert failed[("a", "b")].stalled and "unreachable" in failed[("a", "b")].error
        assert not failed[("b", "a")].stalled
        broken = [t for t in fake_tails.made if t.topic == "a.msg.events"]
        assert len(broken) == 1 and broken[0].closed
        assert not any(x.stalled for x in reader.links())
        again = [t for t in fake_tails.made if t.topic == "a.msg.events"]
        assert len(again) == 2 and not again[1].closed
        assert len(fake_tails.made) == 9  # only the failed one was made again


def test_links_reads_once_and_closes_its_clients(fake_tails: type[FakeTail]) -> None:
    assert len(replication.links(REGIONS)) == 2
    assert len(fake_tails.made) == 8 and all(t.closed for t in fake_tails.made)
