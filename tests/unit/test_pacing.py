"""TxnPacer: transactions start at least `interval` apart, a send waits at most that."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.pacing import TxnPacer

PROPS = settings(max_examples=300, deadline=None)
FULL = 500


def test_refuses_a_negative_interval():
    with pytest.raises(ValueError):
        TxnPacer(-0.001)


def test_the_first_transaction_does_not_wait():
    assert TxnPacer(0.008).delay(100.0, 1, FULL) == 0.0


def test_waits_out_the_rest_of_the_interval():
    p = TxnPacer(0.008)
    p.started(100.0)
    assert p.delay(100.003, 1, FULL) == pytest.approx(0.005)
    assert p.delay(100.008, 1, FULL) == 0.0
    assert p.delay(100.5, 1, FULL) == 0.0


def test_a_full_batch_does_not_wait():
    p = TxnPacer(0.008)
    p.started(100.0)
    assert p.delay(100.001, FULL, FULL) == 0.0


def test_zero_interval_never_waits():
    p = TxnPacer(0.0)
    p.started(100.0)
    assert p.delay(100.0, 1, FULL) == 0.0


@PROPS
@given(interval=st.floats(0, 0.1), gaps=st.lists(st.floats(0, 0.2), min_size=1, max_size=50),
       sizes=st.lists(st.integers(1, FULL), min_size=50, max_size=50),
       clock_step=st.floats(-0.01, 0.0))
def test_starts_are_spaced_and_no_wait_exceeds_the_interval(interval, gaps, sizes, clock_step):
    """Driven as the sequencer drives it (wait, then start): every wait is within
    [0, interval], and two starts of partial batches are at least `interval` apart."""
    p = TxnPacer(interval)
    now = 1000.0
    last_start = None
    for gap, size in zip(gaps, sizes, strict=False):
        now += gap
        wait = p.delay(now, size, FULL)
        assert 0.0 <= wait <= interval
        now += wait
        if last_start is not None and size < FULL:
            assert now - last_start >= interval - 1e-9
        p.started(now)
        last_start = now
    # a clock read a little earlier than the last start (another thread's) waits no more
    assert p.delay(now + clock_step, 1, FULL) <= interval
