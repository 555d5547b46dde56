"""The lag arithmetic of `msgctl status` per MirrorMaker 2 link (no Kafka needed)."""

from __future__ import annotations

from msgctl.infra.replication import HEARTBEAT_STALE_MS, STALL_MS, assess

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
