"""Region failover rules (runtime.core.homes) and the sequencing state's epochs and fences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core import homes
from runtime.core.sequencing import SendRequest, SequencerState, make_seq, split_seq


def _plan(state: SequencerState, conv: str, *cids: str, lookup=lambda c, k: None):
    plan = state.plan([SendRequest.of(conv, "ann", cid) for cid in cids], lookup)
    state.commit(plan)
    return plan


def test_a_new_epoch_continues_from_the_base_above_every_old_seq() -> None:
    state = SequencerState()
    state.load_head("c", make_seq(0, 7))  # the store holds 7 (and orphans up to 9 elsewhere)
    state.adopt("c", 1, make_seq(0, 5))  # the new home held up to 5 when it took over
    a = _plan(state, "c", "x").assignments[0]
    assert (split_seq(a.seq), a.prev) == ((1, 1), make_seq(0, 5))
    b = _plan(state, "c", "y").assignments[0]
    assert (split_seq(b.seq), b.prev) == ((1, 2), a.seq)


def test_an_orphan_head_loaded_later_does_not_move_the_head() -> None:
    state = SequencerState()
    state.adopt("c", 1, 5)
    state.load_head("c", 9)  # an orphan of epoch 0 replicated after the failover
    assert state.head("c") == 5
    state.load_head("c", make_seq(1, 3))
    assert state.head("c") == make_seq(1, 3)


def test_a_fenced_conversation_refuses_sends_and_keeps_its_head() -> None:
    state = SequencerState()
    state.load_head("c", 4)
    state.fence("c", 1)
    plan = _plan(state, "c", "x", "y")
    assert all(a.fenced and a.seq == 0 for a in plan.assignments)
    assert plan.new == [] and state.head("c") == 4
    assert state.known("c", SendRequest.of("c", "ann", "x").key) is None


def test_a_stale_record_does_not_undo_a_later_epoch() -> None:
    state = SequencerState()
    state.adopt("c", 2, 10)
    state.fence("c", 1)  # an old fence arriving late
    assert "c" not in state.fenced and state.epoch_of("c") == 2
    state.fence("c", 3)
    state.adopt("c", 2, 10)
    assert state.fenced["c"] == 3


def test_a_pending_move_is_lifted_by_its_own_epoch() -> None:
    state = SequencerState()
    state.fence("c", 1)  # this region is the new home, waiting for the old one's last seq
    state.adopt("c", 1, 8)
    assert "c" not in state.fenced
    assert _plan(state, "c", "x").assignments[0].prev == 8


def test_a_lookup_that_finds_an_orphan_is_sequenced_again() -> None:
    state = SequencerState()
    state.load_head("c", 5)
    state.adopt("c", 1, 5)
    key = SendRequest.of("c", "ann", "x").key
    plan = _plan(state, "c", "x", lookup=lambda c, k: (7, 6) if k == key else None)
    a = plan.assignments[0]
    assert not a.duplicate and split_seq(a.seq) == (1, 1)
    # a hit in the new epoch (or at or below the base) is a real duplicate
    plan = _plan(state, "c", "z", lookup=lambda c, k: (5, 4))
    assert plan.assignments[0].duplicate and plan.assignments[0].seq == 5


@given(base=st.integers(0, 50), extra=st.integers(0, 20), new=st.integers(1, 20))
def test_every_new_seq_sorts_after_every_old_one(base: int, extra: int, new: int) -> None:
    state = SequencerState()
    state.load_head("c", base + extra)  # the old home went on to base + extra
    state.adopt("c", 1, base)
    seqs = [a.seq for a in _plan(state, "c", *[f"m{i}" for i in range(new)]).assignments]
    assert seqs == sorted(seqs) and len(set(seqs)) == new
    assert min(seqs) > base + extra
    assert [split_seq(s)[1] for s in seqs] == list(range(1, new + 1))


def test_orphans_are_old_epochs_above_the_base() -> None:
    rec = homes.HomeRecord("c", 2, "b", "a", "failover", make_seq(1, 4))
    assert homes.is_orphan(make_seq(1, 5), rec)
    assert homes.is_orphan(make_seq(0, 9), rec) is False  # below base: history
    assert not homes.is_orphan(make_seq(1, 4), rec)
    assert not homes.is_orphan(make_seq(2, 1), rec)
    assert homes.effective_head(make_seq(1, 9), rec) == make_seq(1, 4)
    assert homes.effective_head(make_seq(2, 3), rec) == make_seq(2, 3)


def test_next_record_rules() -> None:
    now = homes.initial("c", "a")
    rec = homes.next_record(now, "b", "failover", held=7, at=1)
    assert (rec.epoch, rec.home, rec.previous, rec.base, rec.active) == (1, "b", "a", 7, True)
    move = homes.next_record(now, "b", "move", held=7)
    assert move.base is None and not move.active and move.held == 7
    with pytest.raises(homes.HomeError, match="already homed"):
        homes.next_record(now, "a", "failover", held=0)
    with pytest.raises(homes.HomeError, match="not reconciled"):
        homes.next_record(rec, "a", "failback", held=0)
    with pytest.raises(homes.HomeError, match="still moving"):
        homes.next_record(move, "a", "failover", held=0)
    with pytest.raises(homes.HomeError, match="unknown kind"):
        homes.next_record(now, "b", "teleport", held=0)


def test_walk_chain_is_complete_once_it_gets_to_the_base() -> None:
    chain = {9: 8, 8: 6, 6: 5}
    walk = homes.walk_chain(9, 5, chain.get)
    assert walk.complete and walk.orphans == [6, 8, 9]
    missing = homes.walk_chain(9, 4, chain.get)
    assert not missing.complete and missing.missing == 5
    # a base off the chain (an orphan's seq) is passed over: complete below it
    assert homes.walk_chain(9, 7, chain.get).complete
    assert homes.walk_chain(9, 7, chain.get).orphans == [8, 9]
    assert homes.walk_chain(5, 5, chain.get).complete
    loop = homes.walk_chain(3, 0, {3: 3}.get)
    assert not loop.complete


def test_to_resend_skips_cids_the_new_epoch_holds_and_repeats() -> None:
    orphans = [(7, "ann", "x"), (6, "bob", "y"), (8, "ann", "z"), (9, "ann", "x")]
    assert homes.to_resend(orphans, {("ann", "z")}) == [6, 7]


def test_a_bucket_walk_jumps_from_an_ended_epoch_to_the_next() -> None:
    from runtime.adapters.cluster.cassandra_store import EMPTY_RUN, _bucket, _next_bucket
    assert _next_bucket(0, 1000, empty_run=0) == 1
    assert _next_bucket(5, 1000, empty_run=1) == 6  # a gap inside an epoch is walked
    assert _next_bucket(5, 1000, empty_run=EMPTY_RUN) == _bucket(1 << 40, 1000)
    boundary = _bucket(1 << 40, 1000)  # holds the end of epoch 0 and the start of epoch 1
    assert _next_bucket(boundary, 1000, empty_run=EMPTY_RUN) == _bucket(2 << 40, 1000)
    for b in (0, 7, boundary, boundary + 3):
        assert _next_bucket(b, 1000, empty_run=EMPTY_RUN) > b
