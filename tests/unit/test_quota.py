"""The pure caps: the byte side of the connection's token bucket and the grant window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.core.quota import Window
from runtime.core.ratelimit import TokenBucket


def test_bytes_run_out_before_frames() -> None:
    b = TokenBucket(100, 100, byte_rate=1000, byte_burst=3000)
    assert [b.check(0.0, 1000).allowed for _ in range(4)] == [True, True, True, False]
    refused = b.check(0.0, 1000)
    assert not refused.allowed and refused.retry_ms == 1000  # 1000 bytes at 1000/s
    assert b.check(1.0, 1000).allowed


def test_a_frame_larger_than_the_byte_burst_waits_for_a_full_bucket_not_forever() -> None:
    b = TokenBucket(100, 100, byte_rate=1000, byte_burst=2000)
    assert b.check(0.0, 5000).allowed
    assert not b.check(0.5, 5000).allowed
    assert b.check(2.0, 5000).allowed


def test_refused_frames_take_nothing_and_count_as_strikes() -> None:
    b = TokenBucket(100, 100, max_strikes=2, byte_rate=10, byte_burst=10)
    assert b.check(0.0, 10).allowed
    verdicts = [b.check(0.0, 10) for _ in range(3)]
    assert [v.close for v in verdicts] == [False, False, True]
    assert b.tokens == 99  # only the accepted frame was taken


@given(st.lists(st.tuples(st.floats(0, 0.5), st.integers(0, 5000)), max_size=200))
def test_bytes_accepted_never_exceed_burst_plus_refill(steps: list[tuple[float, int]]) -> None:
    b = TokenBucket(1e9, 1_000_000, byte_rate=1000, byte_burst=3000)
    now, taken = 0.0, 0
    for dt, size in steps:
        now += dt
        if b.check(now, size).allowed:
            taken += min(size, 3000)
    assert taken <= 3000 + now * 1000 + 1e-6


def test_window_caps_unexpired_grants_per_key() -> None:
    w = Window(cap=2, ttl=10)
    assert w.take("a", 0) and w.take("a", 1)
    assert not w.take("a", 2)
    assert w.take("b", 2)  # another key has its own
    assert w.take("a", 10.5)  # the first grant expired
    assert w.held("a", 10.5) == 2


def test_window_forgets_idle_keys() -> None:
    w = Window(cap=1, ttl=1)
    for i in range(5000):
        w.take(f"k{i}", float(i))
    assert len(w._grants) <= 4 * w.cap + 1024 + 1
