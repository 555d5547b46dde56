"""The load user's pure parts: body timestamps, the plan, user slots, the order tracker."""

from __future__ import annotations

import pytest

from loadtest.model import IndexPool, OrderTracker, Plan, decode_body, encode_body
from loadtest.profile import Conversations

# -- bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 10, 24, 64, 1000, 16384])
def test_body_round_trip_and_size(size: int) -> None:
    body = encode_body(1795944720273.125, size)
    assert decode_body(body) == 1795944720273.125
    assert len(body.encode()) == max(size, len("lt1 1795944720273.125 "))


@pytest.mark.parametrize("body", [None, 5, "", "hello", "lt1", "lt1 x yy", "lt2 12.5 x",
                                  "lt1 12.5"])
def test_foreign_bodies_have_no_timestamp(body: object) -> None:
    assert decode_body(body) is None


# -- plan -----------------------------------------------------------------------------


def test_direct_ring_is_symmetric_and_deterministic() -> None:
    plan = Plan("r1", 10, Conversations(direct=4))
    convs = {c.id: c for c in plan.conversations(3)}
    partners = sorted(m for c in convs.values() for m in c.members if m != 3)
    assert partners == [1, 2, 4, 5]
    for c in convs.values():
        assert c.kind == "direct" and c.id.startswith("load-r1-d")
        other = next(m for m in c.members if m != 3)
        assert c.id in {x.id for x in plan.conversations(other)}
    assert [c.id for c in Plan("r1", 10, Conversations(direct=4)).conversations(3)] == \
        [c.id for c in plan.conversations(3)]


def test_groups_cover_everyone_with_wraparound() -> None:
    plan = Plan("r", 10, Conversations(direct=0, groups=(4,), mix_direct=0, mix_group=1))
    groups = {c.id: c.members for u in range(10) for c in plan.conversations(u)}
    assert groups == {"load-r-g4-0": (0, 1, 2, 3), "load-r-g4-1": (4, 5, 6, 7),
                      "load-r-g4-2": (0, 1, 8, 9)}
    assert {u for members in groups.values() for u in members} == set(range(10))


def test_group_larger_than_population_is_clamped() -> None:
    plan = Plan("r", 3, Conversations(direct=2, groups=(50,), mix_group=1))
    convs = plan.conversations(0)
    group = [c for c in convs if c.kind == "group"]
    assert len(group) == 1 and group[0].members == (0, 1, 2)


def test_tiny_populations() -> None:
    assert Plan("r", 1, Conversations(direct=2)).conversations(0) == []
    two = Plan("r", 2, Conversations(direct=4)).conversations(0)
    assert [c.members for c in two] == [(0, 1)]


def test_user_ids_wrap_slots_onto_the_population() -> None:
    plan = Plan("r", 5, Conversations())
    assert plan.user_id(2) == plan.user_id(7) == "load-r-u2"
    assert plan.conversations(7) == plan.conversations(2)


def test_watch_list() -> None:
    plan = Plan("r", 20, Conversations())
    watch = plan.watch_list(3, 5)
    assert len(watch) == 5 and "load-r-u3" not in watch
    assert watch == plan.watch_list(3, 5)
    assert len(plan.watch_list(3, 100)) == 19


def test_index_pool_per_worker_reuses_lowest_slot() -> None:
    pool = IndexPool(worker_index=1, workers=3)
    assert [pool.acquire() for _ in range(3)] == [1, 4, 7]
    pool.release(4)
    pool.release(1)
    assert pool.acquire() == 1
    assert pool.acquire() == 4
    assert pool.acquire() == 10


# -- order tracker --------------------------------------------------------------------


def msgs(tr: OrderTracker, conv: str, *pairs: tuple[int, int]) -> list[str]:
    out: list[str] = []
    for seq, prev in pairs:
        out += tr.on_msg(conv, seq, prev)[1]
    return out


def test_in_order_chain_advances_head() -> None:
    tr = OrderTracker()
    assert msgs(tr, "c", (1, 0), (2, 1), (3, 2)) == []
    assert tr.head("c") == 3 and tr.heads() == {"c": 3}


def test_first_knowledge_may_start_mid_chain() -> None:
    tr = OrderTracker()
    assert msgs(tr, "c", (41, 40), (42, 41)) == []
    assert tr.head("c") == 42


def test_duplicate_on_one_connection_is_a_violation() -> None:
    tr = OrderTracker()
    out = msgs(tr, "c", (1, 0), (2, 1), (2, 1))
    assert len(out) == 1 and "duplicate or out of order" in out[0]
    assert tr.violations == 1


def test_reorder_on_one_connection_is_a_violation() -> None:
    tr = OrderTracker()
    out = msgs(tr, "c", (1, 0), (3, 2), (2, 1))
    assert any("came after seq 3" in v for v in out)


def test_gap_is_a_violation_when_no_own_send_can_fill_it() -> None:
    tr = OrderTracker()
    out = msgs(tr, "c", (1, 0), (3, 2))
    assert len(out) == 1 and "seq 2 is missing (gap)" in out[0]


def test_own_messages_fill_the_holes_whatever_the_order() -> None:
    tr = OrderTracker()
    assert msgs(tr, "c", (1, 0)) == []
    tr.send_started("c", "m2")
    assert msgs(tr, "c", (3, 2)) == []  # sent for 2 not here yet: wait
    assert tr.open_holes() == 1
    assert tr.on_sent("c", "m2", 2, 1) == []
    assert tr.open_holes() == 0 and tr.head("c") == 3
    # sent before msg: also fine
    tr.send_started("c", "m4")
    assert tr.on_sent("c", "m4", 4, 3) == []
    assert msgs(tr, "c", (5, 4)) == []
    assert tr.head("c") == 5 and tr.violations == 0


def test_hole_over_several_own_messages() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (1, 0))
    for cid, seq in (("a", 2), ("b", 3)):
        tr.send_started("c", cid)
        assert tr.on_sent("c", cid, seq, seq - 1) == []
    assert msgs(tr, "c", (4, 3)) == []
    assert tr.violations == 0


def test_timed_out_send_keeps_the_hole_open_until_finish() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (1, 0))
    tr.send_started("c", "lost")
    tr.send_unknown("lost")
    assert msgs(tr, "c", (3, 2)) == []
    assert tr.check() == []
    # the retry of the same cid tells the seq: the hole closes
    tr.send_started("c", "lost")
    assert tr.on_sent("c", "lost", 2, 1) == []
    assert tr.open_holes() == 0
    # an unknown send that never resolves: unverified at the end, not a violation
    tr.send_started("c", "gone")
    tr.send_unknown("gone")
    msgs(tr, "c", (5, 4))
    violations, unverified = tr.finish()
    assert violations == [] and unverified == 1


def test_refused_send_cannot_fill_a_hole() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (1, 0))
    tr.send_started("c", "x")
    assert msgs(tr, "c", (3, 2)) == []
    out = tr.send_not_stored("x")
    assert len(out) == 1 and "gap" in out[0]


def test_resume_after_reconnect_continues_the_chain() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (1, 0), (2, 1), (3, 2))
    tr.new_connection()
    # everything after the ack comes again: duplicates across connections are fine
    new, out = tr.on_msg("c", 2, 1)
    assert (new, out) == (False, [])
    assert msgs(tr, "c", (3, 2), (4, 3)) == []
    assert tr.duplicates == 2 and tr.head("c") == 4


def test_resume_that_skips_messages_is_a_gap() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (1, 0), (2, 1))
    tr.new_connection()
    out = msgs(tr, "c", (5, 4))
    assert len(out) == 1 and "seq 4 is missing" in out[0]


def test_conflicting_links_are_violations() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (1, 0), (2, 1))
    tr.new_connection()
    out = msgs(tr, "c", (2, 0))
    assert any("came with prev 0, earlier with prev 1" in v for v in out)
    tr2 = OrderTracker()
    msgs(tr2, "c", (1, 0), (2, 1))
    tr2.new_connection()
    out = tr2.on_batch("c", [(3, 1)])[1]
    assert any("followed by both 2 and 3" in v for v in out)


def test_batches_fill_and_check_the_chain() -> None:
    tr = OrderTracker()
    msgs(tr, "c", (10, 9))
    new, out = tr.on_batch("c", [(1, 0), (2, 1), (3, 2)])
    assert (new, out) == (3, [])
    new, out = tr.on_batch("c", [(4, 3), (6, 5)])
    assert new == 2 and any("sync batch has seq 6 (prev 5) after seq 4" in v for v in out)


def test_conversations_are_independent() -> None:
    tr = OrderTracker()
    assert msgs(tr, "a", (1, 0)) == []
    assert msgs(tr, "b", (7, 6), (8, 7)) == []
    assert msgs(tr, "a", (2, 1)) == []
    assert tr.heads() == {"a": 2, "b": 8}


def test_epoch_jumps_are_followed_by_prev() -> None:
    tr = OrderTracker()
    big = (1 << 40) + 1
    assert msgs(tr, "c", (1, 0), (2, 1), (big, 2), (big + 1, big)) == []
    assert tr.head("c") == big + 1


def test_long_chains_are_pruned_but_keep_working() -> None:
    tr = OrderTracker()
    n = OrderTracker.PRUNE_AT + 500
    out = msgs(tr, "c", *[(i, i - 1) for i in range(1, n + 1)])
    assert out == [] and tr.head("c") == n
    assert len(tr.chains["c"].links) <= OrderTracker.PRUNE_AT
    assert msgs(tr, "c", (n + 1, n)) == []
