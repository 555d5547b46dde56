"""SequencerState.plan/commit: order, chain, idempotency, epochs, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.sequencing import (
    EPOCH_SHIFT,
    Assignment,
    SendRequest,
    SequencerState,
    make_seq,
    split_seq,
)

PROPS = settings(max_examples=200, deadline=None)


def req(conv: str, cid: str) -> SendRequest:
    return SendRequest(conv, cid)


# -- examples --------------------------------------------------------------------------------


def test_seq_layout():
    assert make_seq(0, 1) == 1
    assert make_seq(1, 1) == (1 << 40) | 1
    assert EPOCH_SHIFT == 40
    assert split_seq(make_seq(7, 123)) == (7, 123)
    assert split_seq(make_seq(3, (1 << 40) - 1)) == (3, (1 << 40) - 1)


def test_first_batch_chains_per_conversation():
    s = SequencerState()
    plan = s.plan([req("a", "1"), req("b", "1"), req("a", "2"), req("a", "3"), req("b", "2")])
    assert plan.assignments == [
        Assignment("a", "1", 1, 0, False),
        Assignment("b", "1", 1, 0, False),
        Assignment("a", "2", 2, 1, False),
        Assignment("a", "3", 3, 2, False),
        Assignment("b", "2", 2, 1, False),
    ]
    assert plan.heads == {"a": 3, "b": 2}
    assert plan.new == plan.assignments


def test_plan_does_not_mutate_until_commit():
    s = SequencerState()
    plan = s.plan([req("a", "1"), req("a", "2")])
    assert s.head("a") == 0
    assert s.known("a", "1") is None
    again = s.plan([req("a", "1"), req("a", "2")])
    assert again.assignments == plan.assignments
    s.commit(plan)
    assert s.head("a") == 2
    assert s.known("a", "1") == (1, 0)
    assert s.known("a", "2") == (2, 1)


def test_duplicate_within_batch_gets_the_first_assignment():
    s = SequencerState()
    plan = s.plan([req("a", "x"), req("a", "y"), req("a", "x"), req("a", "x")])
    assert [a.seq for a in plan.assignments] == [1, 2, 1, 1]
    assert [a.prev for a in plan.assignments] == [0, 1, 0, 0]
    assert [a.duplicate for a in plan.assignments] == [False, False, True, True]
    assert [a.key for a in plan.new] == ["x", "y"]
    assert plan.heads == {"a": 2}


def test_same_cid_in_two_conversations_is_not_a_duplicate():
    s = SequencerState()
    plan = s.plan([req("a", "x"), req("b", "x")])
    assert [a.duplicate for a in plan.assignments] == [False, False]


def test_duplicate_across_batches_gets_original():
    s = SequencerState()
    s.commit(s.plan([req("a", "x"), req("a", "y")]))
    plan = s.plan([req("a", "z"), req("a", "x")])
    assert plan.assignments == [Assignment("a", "z", 3, 2, False),
                                Assignment("a", "x", 1, 0, True)]
    assert plan.heads == {"a": 3}


def test_batch_of_only_duplicates_moves_no_head():
    s = SequencerState()
    s.commit(s.plan([req("a", "x")]))
    plan = s.plan([req("a", "x"), req("a", "x")])
    assert plan.heads == {}
    assert plan.new == []
    s.commit(plan)
    assert s.head("a") == 1


def test_load_head_continues_the_chain_and_never_goes_back():
    s = SequencerState()
    s.load_head("a", 41)
    s.load_head("a", 7)  # an older value does not move the head back
    plan = s.plan([req("a", "n")])
    assert plan.assignments == [Assignment("a", "n", 42, 41, False)]


def test_lookup_is_consulted_for_unknown_keys_only():
    calls: list[tuple[str, str]] = []

    def lookup(conv: str, cid: str):
        calls.append((conv, cid))
        return (10, 9) if cid == "old" else None

    s = SequencerState()
    s.load_head("a", 20)
    s.commit(s.plan([req("a", "cached")]))
    calls.clear()
    plan = s.plan([req("a", "old"), req("a", "cached"), req("a", "new"), req("a", "old")],
                  lookup)
    assert plan.assignments == [
        Assignment("a", "old", 10, 9, True),
        Assignment("a", "cached", 21, 20, True),
        Assignment("a", "new", 22, 21, False),
        Assignment("a", "old", 10, 9, True),
    ]
    # the cache answers "cached"; a repeat within the batch is not looked up again
    assert calls == [("a", "old"), ("a", "new")]


def test_epoch_bump_restarts_counter_above_old_seqs():
    s = SequencerState()
    s.commit(s.plan([req("a", str(i)) for i in range(5)]))
    assert s.head("a") == 5
    s.epoch = 1
    plan = s.plan([req("a", "n1"), req("a", "n2"), req("b", "n1"), req("a", "0")])
    e1 = 1 << EPOCH_SHIFT
    assert plan.assignments == [
        Assignment("a", "n1", e1 | 1, 5, False),
        Assignment("a", "n2", e1 | 2, e1 | 1, False),
        Assignment("b", "n1", e1 | 1, 0, False),
        Assignment("a", "0", 1, 0, True),  # the old message keeps its old seq
    ]
    s.commit(plan)
    assert s.plan([req("a", "n3")]).assignments[0] == Assignment("a", "n3", e1 | 3, e1 | 2,
                                                                 False)


def test_epoch_behind_the_head_refuses_to_assign():
    s = SequencerState(epoch=0)
    s.load_head("a", make_seq(2, 9))
    with pytest.raises(ValueError):
        s.plan([req("a", "x")])
    s.epoch = 1
    with pytest.raises(ValueError):
        s.plan([req("a", "x")])
    # a duplicate needs no new seq, so it is still answered
    s.epoch = 0
    plan = s.plan([req("a", "x")], lambda conv, cid: (make_seq(2, 9), make_seq(2, 8)))
    assert plan.assignments[0].duplicate


def test_epoch_skip_is_allowed():
    s = SequencerState()
    s.load_head("a", make_seq(1, 500))
    s.epoch = 5
    a = s.plan([req("a", "x")]).assignments[0]
    assert (a.seq, a.prev) == (make_seq(5, 1), make_seq(1, 500))


def test_recent_memory_is_lru_bounded():
    s = SequencerState(recent_capacity=2)
    s.commit(s.plan([req("a", "1")]))
    s.commit(s.plan([req("a", "2")]))
    # a duplicate refreshes "1": it is now the most recently used
    s.commit(s.plan([req("a", "1")]))
    s.commit(s.plan([req("a", "3")]))
    assert s.known("a", "2") is None
    assert s.known("a", "1") == (1, 0)
    assert s.known("a", "3") == (3, 2)
    # without the store, a forgotten cid looks new: the store lookup is what keeps it idempotent
    forgotten = s.plan([req("a", "2")]).assignments[0]
    assert not forgotten.duplicate
    remembered = s.plan([req("a", "2")], lambda c, i: (2, 1)).assignments[0]
    assert remembered == Assignment("a", "2", 2, 1, True)


def test_capacity_applies_within_a_single_commit():
    s = SequencerState(recent_capacity=3)
    s.commit(s.plan([req("a", str(i)) for i in range(10)]))
    assert [s.known("a", str(i)) is not None for i in range(10)] == [False] * 7 + [True] * 3
    assert s.head("a") == 10


# -- model-based property --------------------------------------------------------------------

convs = st.sampled_from(["a", "b", "c"])
cids = st.sampled_from([f"m{i}" for i in range(12)])
batches = st.lists(st.builds(SendRequest, convs, cids), min_size=0, max_size=8)
steps = st.lists(
    st.tuples(batches, st.booleans(), st.booleans()),  # (batch, append fails?, bump epoch?)
    min_size=1, max_size=25,
)


@PROPS
@given(steps, st.integers(1, 6), st.booleans())
def test_sequencer_model(steps, capacity, use_store):
    s = SequencerState(recent_capacity=capacity)
    store: dict[tuple[str, str], tuple[int, int]] = {}  # the durable cid index
    log: dict[str, list[int]] = {}  # conversation -> seqs, in append order

    def lookup(conv: str, cid: str):
        return store.get((conv, cid)) if use_store else None

    for batch, fails, bump in steps:
        if bump:
            s.epoch += 1
        cached = {(r.conv, r.key): s.known(r.conv, r.key) for r in batch}
        plan = s.plan(batch, lookup)
        assert len(plan.assignments) == len(batch)
        if fails:
            # the append failed: nothing changed, and planning again gives the same answer
            assert s.plan(batch, lookup) == plan
            continue
        first_in_batch: dict[tuple[str, str], Assignment] = {}
        heads_before = {conv: s.head(conv) for conv in {r.conv for r in batch}}
        last_new: dict[str, int] = {}
        for r, a in zip(batch, plan.assignments, strict=True):
            assert (a.conv, a.key) == (r.conv, r.key)
            key = (r.conv, r.key)
            if key in first_in_batch:
                first = first_in_batch[key]
                assert a.duplicate and (a.seq, a.prev) == (first.seq, first.prev)
                continue
            first_in_batch[key] = a
            remembered = cached[key] or (store.get(key) if use_store else None)
            if remembered is not None:
                assert a.duplicate
                assert (a.seq, a.prev) == remembered
                continue
            assert not a.duplicate
            # the chain: prev is the previous seq of the conversation
            expected_prev = last_new.get(r.conv, heads_before[r.conv])
            assert a.prev == expected_prev
            assert a.seq > a.prev
            epoch, counter = split_seq(a.seq)
            assert epoch == s.epoch
            assert counter == (split_seq(a.prev)[1] + 1 if split_seq(a.prev)[0] == epoch else 1)
            last_new[r.conv] = a.seq
        assert plan.heads == last_new
        s.commit(plan)
        for a in plan.new:
            log.setdefault(a.conv, []).append(a.seq)
            if use_store:
                assert (a.conv, a.key) not in store, "one cid made two messages"
            store[(a.conv, a.key)] = (a.seq, a.prev)
        for conv, head in last_new.items():
            assert s.head(conv) == head

    for conv, seqs in log.items():
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs), "a seq was used twice"
        assert s.head(conv) == seqs[-1]


@PROPS
@given(st.lists(st.builds(SendRequest, convs, cids), min_size=1, max_size=60),
       st.integers(1, 8))
def test_with_store_every_cid_makes_exactly_one_message(requests, capacity):
    """Sends one at a time with retries interleaved: each (conv, cid) is sequenced once."""
    s = SequencerState(recent_capacity=capacity)
    store: dict[tuple[str, str], tuple[int, int]] = {}
    prev_seq: dict[str, int] = {}
    for r in requests:
        plan = s.plan([r], lambda conv, cid: store.get((conv, cid)))
        a = plan.assignments[0]
        key = (r.conv, r.key)
        if key in store:
            assert a.duplicate and (a.seq, a.prev) == store[key]
        else:
            assert not a.duplicate
            assert a.prev == prev_seq.get(r.conv, 0)
            store[key] = (a.seq, a.prev)
            prev_seq[r.conv] = a.seq
        s.commit(plan)
    # the memory stays bounded: the state remembers at most `capacity` of the cids
    assert sum(s.known(*key) is not None for key in store) <= capacity


def test_complete_only_for_conversations_seen_whole():
    s = SequencerState(recent_capacity=3)
    s.load_head("fresh", 0)
    s.load_head("old", 7)
    assert s.complete("fresh") and not s.complete("old")
    s.load_head("fresh", 0)  # loading again changes nothing
    assert s.complete("fresh")
    for i in range(3):
        s.remember("fresh", f"c{i}", i + 1, i)
    assert s.complete("fresh")
    s.remember("other", "x", 1, 0)  # evicts fresh's oldest cid: the cache no longer has all
    assert not s.complete("fresh")
    assert s.known("fresh", "c0") is None


def test_a_complete_conversation_never_consults_the_store():
    s = SequencerState()
    s.load_head("c", 0)
    asked: list[tuple[str, str]] = []

    def lookup(conv: str, cid: str) -> tuple[int, int] | None:
        asked.append((conv, cid))
        return None

    # the shell skips lookups for complete conversations; the plan is the same without them
    s.commit(s.plan([SendRequest("c", "a")], lookup if not s.complete("c") else lambda c, i: None))
    assert asked == []
    again = s.plan([SendRequest("c", "a")])
    assert again.assignments[0].duplicate and again.assignments[0].seq == 1


def test_an_evicted_cid_waits_for_the_store_to_hold_it():
    """The cache forgot a cid the store may not hold yet (it is written after the commit):
    the conversation's lookups wait until the store is read holding it, and its sends
    that need a lookup meanwhile are deferred, never sequenced anew."""
    s = SequencerState(recent_capacity=2)
    s.load_head("a", 0)
    s.commit(s.plan([req("a", "1"), req("a", "2"), req("a", "3")]))  # "1" (seq 1) evicted
    assert not s.complete("a") and s.store_behind("a")
    s.note_stored("a", 0)
    assert s.store_behind("a")
    plan = s.plan([req("a", "1"), req("a", "3"), req("a", "1"), req("a", "new")],
                  lambda c, k: None, defer={"a"})
    first, known, again, new = plan.assignments
    assert first.deferred and first.seq == 0 and again is first
    assert known == Assignment("a", "3", 3, 2, True)  # the cache still answers this one
    assert new.deferred and plan.new == [] and plan.heads == {}
    s.commit(plan)
    assert s.head("a") == 3 and s.known("a", "1") is None  # a deferred send leaves no trace
    s.note_stored("a", 1)
    assert not s.store_behind("a")
    s.commit(s.plan([req("a", "4"), req("a", "5")]))  # evicts "2" and "3": at most seq 3
    assert s.store_behind("a")
    s.note_stored("a", 5)
    s.remember("b", "x", 1, 0)  # evicts "4": the store was seen holding it already
    assert not s.store_behind("a")


@PROPS
@given(st.lists(st.builds(SendRequest, convs, cids), min_size=1, max_size=40),
       st.integers(1, 6), st.lists(st.integers(0, 3), min_size=1, max_size=10))
def test_a_store_written_behind_the_log_never_makes_a_cid_twice(requests, capacity, lags):
    """The kernel's rule against a store that is written after the commit (the cluster's
    router), catching up by a few messages a step: a cid the cache forgot and the store
    does not hold yet is deferred and sent again later, never sequenced a second time."""
    s = SequencerState(recent_capacity=capacity)
    log: list[tuple[str, str, int, int]] = []  # committed: (conv, key, seq, prev)
    stored = 0  # how much of the log the store holds
    queue = list(requests)
    step = 0
    while queue:
        r = queue.pop(0)
        if r.conv not in s.heads:
            s.load_head(r.conv, max((m[2] for m in log[:stored] if m[0] == r.conv), default=0))
        held = {(c, k): (q, p) for c, k, q, p in log[:stored]}
        defer: set[str] = set()
        if s.unknown([r]) and s.store_behind(r.conv):
            s.note_stored(r.conv, max((m[2] for m in log[:stored] if m[0] == r.conv),
                                      default=0))
            if s.store_behind(r.conv):
                defer.add(r.conv)
        plan = s.plan([r], lambda c, k, held=held: held.get((c, k)), defer)
        a = plan.assignments[0]
        if a.deferred:
            queue.append(r)  # the client retries
        else:
            committed = {(c, k): (q, p) for c, k, q, p in log}
            if (r.conv, r.key) in committed:
                assert a.duplicate and (a.seq, a.prev) == committed[(r.conv, r.key)]
            else:
                assert not a.duplicate, "a duplicate of nothing"
                log.append((a.conv, a.key, a.seq, a.prev))
            s.commit(plan)
        stored = min(len(log), stored + lags[step % len(lags)] + (1 if a.deferred else 0))
        step += 1
    assert len({(c, k) for c, k, _, _ in log}) == len(log), "one cid made two messages"
