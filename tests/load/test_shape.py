"""Stage math: ramps at spawn_rate or over a time, holds, spikes and their drop, the end."""

from __future__ import annotations

import pytest

from loadtest import profile as pm
from loadtest.shape import Timeline


def timeline(shape: str, users: int = 100, rate: float = 10, duration: str = "60s",
             drain: float = 0.0) -> Timeline:
    text = f"users: {users}\nspawn_rate: {rate}\nduration: {duration}\nshape:\n{shape}"
    return Timeline(pm.parse(text, "t.yaml"), drain=drain)


def test_default_ramp_then_hold_to_the_end() -> None:
    t = timeline("  - {stage: ramp, users: 100%}\n")
    assert [(s.start, s.end, s.users, s.rate) for s in t.segments] == [
        (0, 10, 100, 10), (10, 60, 100, 10)]
    assert t.tick(0) == (100, 10)
    assert t.tick(59.9) == (100, 10)
    assert t.tick(60) is None
    assert t.peak == 100


def test_ramp_over_a_time_and_at_a_rate() -> None:
    t = timeline("  - {stage: ramp, users: 50, for: 20s}\n"
                 "  - {stage: ramp, users: 80, rate: 3}\n"
                 "  - {stage: hold, for: 5s}\n"
                 "  - {stage: ramp, users: 0%, for: 10s}\n")
    segs = [(s.start, s.end, s.users, round(s.rate, 3)) for s in t.segments]
    assert segs == [(0, 20, 50, 2.5), (20, 30, 80, 3), (30, 35, 80, 10), (35, 45, 0, 8),
                    (45, 60, 0, 10)]
    assert t.tick(25) == (80, 3)
    assert t.tick(40) == (0, 8)


def test_spike_jumps_holds_and_drops_back() -> None:
    t = timeline("  - {stage: ramp, users: 100%}\n"
                 "  - {stage: hold, for: 20s}\n"
                 "  - {stage: spike, users: 300%, for: 5s}\n"
                 "  - {stage: hold}\n")
    segs = [(s.start, s.end, s.users, s.rate) for s in t.segments]
    assert segs == [(0, 10, 100, 10), (10, 30, 100, 10), (30, 35, 300, 200), (35, 36, 100, 200),
                    (36, 60, 100, 10)]
    assert t.peak == 300
    assert t.tick(31) == (300, 200)
    assert t.tick(35.5) == (100, 200)
    assert t.tick(40) == (100, 10)


def test_spike_at_a_given_rate_takes_its_time_to_drop() -> None:
    t = timeline("  - {stage: spike, users: 40, for: 5s, rate: 10}\n")
    segs = [(s.start, s.end, s.users, s.rate) for s in t.segments]
    assert segs == [(0, 5, 40, 10), (5, 9, 0, 10), (9, 60, 0, 10)]


def test_percentages_follow_users_override() -> None:
    prof = pm.parse("users: 10\nspawn_rate: 5\nduration: 30s\nshape:\n"
                    "  - {stage: ramp, users: 150%}\n  - {stage: spike, users: 40, for: 2s}\n",
                    "t.yaml")
    assert Timeline(prof).peak == 40
    big = Timeline(prof.with_overrides(users=100))
    assert big.segments[0].users == 150 and big.peak == 150


def test_stages_past_the_duration_are_cut() -> None:
    t = timeline("  - {stage: ramp, users: 100, for: 30s}\n  - {stage: hold, for: 60s}\n",
                 duration="40s")
    assert [(s.start, s.end) for s in t.segments] == [(0, 30), (30, 40)]
    assert t.tick(39.9) == (100, 10)
    assert t.tick(40) is None


def test_short_duration_cuts_a_slow_ramp() -> None:
    t = timeline("  - {stage: ramp, users: 100%}\n", users=6, rate=10, duration="5s")
    assert t.tick(0) == (6, 10)
    assert t.tick(4.9) == (6, 10)
    assert t.tick(5) is None


def test_drain_stops_every_user_before_the_end() -> None:
    t = timeline("  - {stage: ramp, users: 100%}\n", drain=4)
    assert t.tick(59) == (100, 10)
    users, rate = t.tick(61)
    assert users == 0 and rate >= 100
    assert t.tick(64) is None


@pytest.mark.parametrize("t", [0.0, 0.5, 9.99, 10.0, 59.0])
def test_rates_are_always_positive(t: float) -> None:
    tl = timeline("  - {stage: ramp, users: 0}\n  - {stage: ramp, users: 0, for: 10s}\n")
    tick = tl.tick(t)
    assert tick is not None and tick[1] > 0
