"""RestartTracker: backoff with jitter, the cap, FATAL, and the stable-uptime reset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgctl.supervisor.policy import Decision, RestartPolicy, RestartTracker

PROPS = settings(max_examples=200, deadline=None)
MID = 0.5  # rand = 0.5 means no jitter


def test_default_policy():
    p = RestartPolicy()
    assert (p.base_delay, p.factor, p.max_delay, p.jitter, p.max_retries, p.stable_after) == (
        0.5, 2.0, 30.0, 0.2, 5, 10.0)


def test_exponential_backoff_then_fatal_after_max_retries():
    t = RestartTracker()
    delays = [t.on_exit(0.1, MID) for _ in range(5)]
    assert delays == [Decision(False, d) for d in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert t.on_exit(0.1, MID) == Decision(True)
    assert t.total == 5  # the fatal exit is not a restart


def test_fatal_stays_fatal_until_reset():
    t = RestartTracker(RestartPolicy(max_retries=2))
    assert not t.on_exit(0.0, MID).fatal
    assert not t.on_exit(0.0, MID).fatal
    assert t.on_exit(0.0, MID).fatal
    assert t.on_exit(0.0, MID).fatal
    t.reset()
    assert t.on_exit(0.0, MID) == Decision(False, 0.5)


def test_zero_retries_is_fatal_at_once():
    t = RestartTracker(RestartPolicy(max_retries=0))
    assert t.on_exit(0.0, MID).fatal
    assert t.total == 0


def test_stable_uptime_resets_the_count():
    t = RestartTracker()
    for _ in range(5):
        t.on_exit(1.0, MID)
    # it stayed up for stable_after: a fresh start, not a sixth quick failure
    assert t.on_exit(10.0, MID) == Decision(False, 0.5)
    assert t.on_exit(1.0, MID) == Decision(False, 1.0)
    assert t.on_exit(3600.0, MID) == Decision(False, 0.5)


def test_uptime_just_under_stable_is_still_quick():
    t = RestartTracker()
    for _ in range(5):
        t.on_exit(9.999, MID)
    assert t.on_exit(9.999, MID).fatal


def test_reset_restarts_the_backoff():
    t = RestartTracker()
    t.on_exit(0.0, MID)
    t.on_exit(0.0, MID)
    t.reset()
    assert t.on_exit(0.0, MID) == Decision(False, 0.5)


def test_backoff_reaches_max_delay():
    t = RestartTracker(RestartPolicy(max_retries=20))
    delays = [t.on_exit(0.0, MID).delay for _ in range(20)]
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert set(delays[6:]) == {30.0}


@pytest.mark.parametrize("rand,expected", [(0.0, 0.4), (0.25, 0.45), (0.5, 0.5), (0.75, 0.55)])
def test_jitter_is_plus_minus_20_percent(rand, expected):
    assert RestartTracker().on_exit(0.0, rand).delay == pytest.approx(expected)


def test_no_jitter_policy_is_deterministic():
    t = RestartTracker(RestartPolicy(jitter=0.0))
    assert [t.on_exit(0.0, r).delay for r in (0.0, 0.99, 0.3)] == [0.5, 1.0, 2.0]


def test_delay_never_exceeds_max_delay_even_with_jitter():
    t = RestartTracker(RestartPolicy(max_retries=20))
    for _ in range(10):
        t.on_exit(0.0, MID)
    d = t.on_exit(0.0, 0.999).delay
    assert d <= 30.0, f"max_delay is 30 s, the restart waits {d:.1f} s"


# -- properties ------------------------------------------------------------------------------

policies = st.builds(
    RestartPolicy,
    base_delay=st.floats(0.01, 5),
    factor=st.floats(1, 4),
    max_delay=st.floats(0.01, 120),
    jitter=st.floats(0, 0.5),
    max_retries=st.integers(0, 30),
    stable_after=st.floats(0.1, 60),
)
exits = st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1, exclude_max=True)), max_size=50)


@PROPS
@given(policies, exits)
def test_backoff_model(policy, exits):
    t = RestartTracker(policy)
    consecutive = 0
    restarts = 0
    for uptime, rand in exits:
        if uptime >= policy.stable_after:
            consecutive = 0
        consecutive += 1
        d = t.on_exit(uptime, rand)
        if consecutive > policy.max_retries:
            assert d.fatal
            continue
        assert not d.fatal
        restarts += 1
        base = min(policy.max_delay, policy.base_delay * policy.factor ** (consecutive - 1))
        lo, hi = base * (1 - policy.jitter), base * (1 + policy.jitter)
        assert lo - 1e-9 <= d.delay <= hi + 1e-9
        assert d.delay >= 0
    assert t.total == restarts


@PROPS
@given(policies, st.integers(1, 30))
def test_jitter_free_delays_are_non_decreasing_and_capped(policy, n):
    t = RestartTracker(RestartPolicy(policy.base_delay, policy.factor, policy.max_delay, 0.0,
                                     max_retries=n, stable_after=policy.stable_after))
    delays = [t.on_exit(0.0, 0.5).delay for _ in range(n)]
    assert delays == sorted(delays)
    assert all(d <= policy.max_delay for d in delays)
    assert delays[0] == min(policy.base_delay, policy.max_delay)
    assert t.on_exit(0.0, 0.5).fatal
