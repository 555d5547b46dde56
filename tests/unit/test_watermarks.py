"""Watermarks: read <= delivered <= head, cumulative and monotonic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.watermarks import (
    Update,
    Watermark,
    advance_cursor,
    apply_ack,
    apply_read,
    clamp,
)

PROPS = settings(max_examples=200, deadline=None)


def test_clamp():
    assert clamp(5, 10) == 5
    assert clamp(15, 10) == 10
    assert clamp(-3, 10) == 0
    assert clamp(7, 0) == 0


def test_ack_moves_delivered_only():
    u = apply_ack(Watermark(), 4, head=10)
    assert u == Update(Watermark(delivered=4, read=0), True, False)


def test_ack_above_head_is_clamped():
    assert apply_ack(Watermark(), 99, head=10).mark == Watermark(10, 0)


def test_ack_below_or_at_mark_changes_nothing():
    mark = Watermark(6, 2)
    assert apply_ack(mark, 6, head=10) == Update(mark, False, False)
    assert apply_ack(mark, 3, head=10) == Update(mark, False, False)
    assert apply_ack(mark, -1, head=10) == Update(mark, False, False)


def test_read_moves_both_marks():
    assert apply_read(Watermark(2, 1), 5, head=10) == Update(Watermark(5, 5), True, True)


def test_read_below_delivered_moves_read_only():
    assert apply_read(Watermark(8, 1), 5, head=10) == Update(Watermark(8, 5), False, True)


def test_read_above_head_is_clamped_and_old_read_is_a_no_op():
    assert apply_read(Watermark(3, 3), 50, head=10).mark == Watermark(10, 10)
    mark = Watermark(9, 7)
    assert apply_read(mark, 4, head=10) == Update(mark, False, False)


def test_cursor_never_moves_back_and_is_clamped():
    assert advance_cursor(0, 5, head=10) == 5
    assert advance_cursor(5, 3, head=10) == 5
    assert advance_cursor(5, 50, head=10) == 10
    assert advance_cursor(5, -1, head=10) == 5


ops = st.lists(
    st.tuples(st.sampled_from(["ack", "read", "send"]), st.integers(-5, 60)),
    max_size=60,
)


@PROPS
@given(ops, st.integers(0, 20))
def test_watermark_invariants(ops, head):
    mark = Watermark()
    cursor = 0
    # the reference model: the max of every clamped value seen
    model_delivered = model_read = 0
    for op, value in ops:
        if op == "send":
            head += max(0, value) % 5  # the head only grows
            continue
        before = mark
        if op == "ack":
            update = apply_ack(mark, value, head)
            assert not update.read_moved
            cursor_before = cursor
            cursor = advance_cursor(cursor, value, head)
            assert cursor_before <= cursor <= head
            assert cursor == max(cursor_before, min(max(value, 0), head))
            model_delivered = max(model_delivered, min(max(value, 0), head))
        else:
            update = apply_read(mark, value, head)
            c = min(max(value, 0), head)
            model_delivered = max(model_delivered, c)
            model_read = max(model_read, c)
        mark = update.mark
        assert 0 <= mark.read <= mark.delivered <= head
        assert mark.delivered >= before.delivered and mark.read >= before.read
        assert update.delivered_moved == (mark.delivered != before.delivered)
        assert update.read_moved == (mark.read != before.read)
        assert (mark.delivered, mark.read) == (model_delivered, model_read)
