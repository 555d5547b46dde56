"""TokenBucket: burst, refill, retry_ms, and the abuse cut-off."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.ratelimit import TokenBucket, Verdict

PROPS = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 5), (1, 0), (1, -3)])
def test_invalid_parameters(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_burst_then_refusal_with_retry_ms():
    b = TokenBucket(rate=2, burst=5)
    assert [b.check(100.0).allowed for _ in range(5)] == [True] * 5
    v = b.check(100.0)
    assert not v.allowed
    assert v.retry_ms == 500  # one token at 2/s
    assert not v.close


def test_retry_ms_shrinks_as_the_bucket_refills():
    b = TokenBucket(rate=1, burst=1)
    assert b.check(0.0).allowed
    assert b.check(0.0).retry_ms == 1000
    assert b.check(0.25).retry_ms == 750
    assert b.check(0.75).retry_ms == 250
    assert b.check(1.0).allowed


def test_retry_ms_is_at_least_one():
    b = TokenBucket(rate=1e9, burst=1)
    assert b.check(0.0).allowed
    v = b.check(0.0)
    assert not v.allowed and v.retry_ms == 1


def test_refill_over_time_is_capped_at_burst():
    b = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        assert b.check(0.0).allowed
    assert not b.check(0.0).allowed
    assert b.check(0.1).allowed  # one token after 100 ms
    assert not b.check(0.1).allowed
    # an hour idle refills only up to the burst
    assert [b.check(3600.0).allowed for _ in range(4)] == [True, True, True, False]


def test_close_after_max_strikes_consecutive_refusals():
    b = TokenBucket(rate=1, burst=1, max_strikes=3)
    assert b.check(0.0).allowed
    verdicts = [b.check(0.0) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [False] * 5
    assert [v.close for v in verdicts] == [False, False, False, True, True]
    assert all(v.retry_ms > 0 for v in verdicts)


def test_strikes_reset_on_an_allowed_frame():
    b = TokenBucket(rate=1, burst=1, max_strikes=3)
    assert b.check(0.0).allowed
    for _ in range(3):
        assert not b.check(0.0).close
    assert b.check(1.0).allowed  # refilled: the strike count starts again
    assert b.strikes == 0
    for _ in range(3):
        assert not b.check(1.0).close
    assert b.check(1.0).close


def test_clock_going_back_neither_refills_nor_breaks():
    b = TokenBucket(rate=1, burst=2)
    assert b.check(10.0).allowed
    assert b.check(10.0).allowed
    assert not b.check(5.0).allowed  # earlier than the last check: no tokens appear
    assert not b.check(10.5).allowed  # measured from 10.0, not from 5.0
    assert b.check(11.0).allowed


def test_default_max_strikes_is_50():
    b = TokenBucket(rate=1, burst=1)
    b.check(0.0)
    verdicts = [b.check(0.0) for _ in range(51)]
    assert not any(v.close for v in verdicts[:50])
    assert verdicts[50].close


def test_verdict_defaults():
    assert Verdict(True) == Verdict(True, 0, False)


# -- properties ------------------------------------------------------------------------------

rates = st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 100.0]) | st.floats(0.1, 1000)
times = st.floats(0, 1e6, allow_nan=False)


@PROPS
@given(rates, st.integers(1, 20), st.lists(st.floats(0, 5), max_size=80), times)
def test_never_more_than_burst_plus_rate_times_elapsed(rate, burst, gaps, start):
    b = TokenBucket(rate, burst, max_strikes=10**9)
    now = start
    allowed = 0
    for gap in gaps:
        now += gap
        v = b.check(now)
        allowed += v.allowed
        assert v.allowed != (v.retry_ms > 0)
        assert not v.close
        assert 0 <= b.tokens <= burst
        assert allowed <= burst + (now - start) * rate + 1e-6


@PROPS
@given(rates, st.integers(1, 20), st.integers(1, 30), times)
def test_steady_client_within_the_rate_is_never_refused(rate, burst, n, start):
    b = TokenBucket(rate, burst)
    interval = 1.001 / rate
    for i in range(n):
        assert b.check(start + i * interval).allowed


@PROPS
@given(rates, st.integers(1, 5), st.integers(0, 10), times)
def test_retry_ms_is_long_enough(rate, burst, extra, now):
    """A client that waits `retry_ms` after a refusal is served."""
    b = TokenBucket(rate, burst, max_strikes=10**9)
    for _ in range(burst + extra):
        b.check(now)
    v = b.check(now)
    assert not v.allowed
    assert b.check(now + v.retry_ms / 1000).allowed, (
        f"refused again after waiting retry_ms={v.retry_ms} (rate {rate}, at {now})")


@PROPS
@given(rates, st.integers(1, 5), times)
def test_retry_ms_is_not_much_longer_than_needed(rate, burst, now):
    b = TokenBucket(rate, burst)
    for _ in range(burst):
        assert b.check(now).allowed
    v = b.check(now)
    assert v.retry_ms <= max(1, math.ceil(1000 / rate)) + 1
    # half-way through the wait it is still too early
    if v.retry_ms >= 4:
        assert not b.check(now + v.retry_ms / 2000).allowed


@PROPS
@given(st.integers(0, 10), st.lists(st.booleans(), max_size=60))
def test_strike_model(max_strikes, pattern):
    """close == more than max_strikes refusals in a row, whatever the traffic pattern."""
    b = TokenBucket(rate=1, burst=1, max_strikes=max_strikes)
    now = 0.0
    run = 0
    for i, wait in enumerate(pattern):
        if wait:
            now += 1.0  # a token has come back
        v = b.check(now)
        assert v.allowed == (wait or i == 0)  # the first frame uses the initial token
        run = 0 if v.allowed else run + 1
        assert v.close == (run > max_strikes)
