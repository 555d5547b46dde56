"""Watermarks: read <= delivered <= head, cumulative and monotonic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.cursors import CursorBuffer
from runtime.core.watermarks import (
    MarkOp,
    Update,
    Watermark,
    apply_ack,
    apply_read,
    clamp,
    plan_marks,
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


def cursor_of(buf: CursorBuffer) -> int:
    return buf.overlay("u", "d", {}).get("c", 0)


def test_cursor_never_moves_back_and_is_clamped():
    buf = CursorBuffer()
    assert buf.advance("u", "d", "c", 5, head=10) and cursor_of(buf) == 5
    assert not buf.advance("u", "d", "c", 3, head=10) and cursor_of(buf) == 5
    assert buf.advance("u", "d", "c", 50, head=10) and cursor_of(buf) == 10
    assert not buf.advance("u", "d", "c", -1, head=10) and cursor_of(buf) == 10
    assert buf.take() == {("u", "d", "c"): 10}  # only the newest value is written
    assert buf.take() == {} and not buf.pending


def test_cursor_buffer_overlays_the_store_and_requeues_failed_writes():
    buf = CursorBuffer()
    buf.advance("u", "d", "a", 7, head=9)
    # the store is behind on "a" and ahead on "b": each cursor is the higher of the two
    assert buf.overlay("u", "d", {"a": 3, "b": 4}) == {"a": 7, "b": 4}
    assert buf.overlay("u", "other", {"a": 1}) == {"a": 1}
    failed = buf.take()
    buf.advance("u", "d", "a", 8, head=9)
    buf.requeue(failed)  # an older failed write never lowers a newer pending one
    assert buf.take() == {("u", "d", "a"): 8}


def test_cursor_buffer_is_bounded():
    buf = CursorBuffer(bound=2)
    for device in ("d1", "d2", "d3"):
        buf.advance("u", device, "c", 1, head=1)
    assert buf.overlay("u", "d1", {}) == {} and buf.overlay("u", "d3", {}) == {"c": 1}
    assert len(buf.take()) == 3  # forgetting a device never drops its pending write


def test_plan_marks_keeps_the_newest_receipt_and_the_device_that_moved_it():
    ops = [MarkOp("ack", "c", "u", "phone", 3), MarkOp("ack", "c", "u", "laptop", 5),
           MarkOp("read", "c", "u", "phone", 4), MarkOp("ack", "c", "v", "x", 1),
           MarkOp("ack", "c", "u", "phone", 2)]  # behind: changes nothing
    plan = plan_marks(ops, lambda conv, user: Watermark(0, 0), lambda conv: 10)
    assert plan.marks == {("c", "u"): Watermark(5, 4), ("c", "v"): Watermark(1, 0)}
    assert sorted(plan.receipts()) == [("c", "u", "delivered", 5, "laptop"),
                                       ("c", "u", "read", 4, "phone"),
                                       ("c", "v", "delivered", 1, "x")]
    # clamped to the head, and nothing moves below the current watermark
    plan = plan_marks([MarkOp("read", "c", "u", "d", 99), MarkOp("ack", "c", "w", "d", 2)],
                      lambda conv, user: Watermark(3, 0), lambda conv: 8)
    assert plan.receipts() == [("c", "u", "delivered", 8, "d"), ("c", "u", "read", 8, "d")]


ops = st.lists(
    st.tuples(st.sampled_from(["ack", "read", "send"]), st.integers(-5, 60)),
    max_size=60,
)


@PROPS
@given(ops, st.integers(0, 20))
def test_watermark_invariants(ops, head):
    mark = Watermark()
    cursor = 0
    buf = CursorBuffer()
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
            buf.advance("u", "d", "c", value, head)
            cursor = cursor_of(buf)
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
