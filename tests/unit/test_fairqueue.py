"""Properties of `FairQueue` (the push runtime's queueing rule), checked with hypothesis.

Fairness: a key with one pending item is served within one turn of the keys waiting
before it (at most `max_keys` takes), whatever the other keys' backlogs. Bounds: no key
holds more than `per_key` items and at most `max_keys` keys hold a slot. Accounting:
every item offered is served once, dropped once (only ever one of the offered key's
own), or still waiting; nothing is served twice.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.fairqueue import COLLAPSED, FULL, OVERFLOW, FairQueue

PROPS = settings(max_examples=300, deadline=None)

# ("offer", key, collapse) | ("take",) | ("done", pick) | ("take_done",)
ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(0, 7), st.none() | st.integers(0, 2)),
        st.tuples(st.just("take")),
        st.tuples(st.just("done"), st.integers(0, 100)),
        st.tuples(st.just("take_done")),
    ),
    max_size=120,
)


class Model:
    """Drives a FairQueue and checks every answer against the bookkeeping."""

    def __init__(self, per_key: int, max_keys: int) -> None:
        self.q: FairQueue[Any, tuple[Any, int]] = FairQueue(per_key, max_keys)
        self.next_id = 0
        self.waiting: dict[Any, list[int]] = {}  # key -> ids offered, not served or dropped
        self.served: list[int] = []
        self.dropped: list[int] = []
        self.busy: list[Any] = []

    def offer(self, key: Any, collapse: Any = None) -> tuple[str, int]:
        item_id = self.next_id
        self.next_id += 1
        room = self.q.has_room(key)
        got = self.q.offer(key, (key, item_id), collapse)
        assert got.accepted == room
        if not got.accepted:
            assert got.reason == FULL and got.dropped == (key, item_id)
            self.dropped.append(item_id)
            return got.reason, item_id
        self.waiting.setdefault(key, []).append(item_id)
        if got.dropped is not None:
            assert got.reason in (COLLAPSED, OVERFLOW)
            dropped_key, dropped_id = got.dropped
            assert dropped_key == key, "an offer drops only one of its own key's items"
            assert dropped_id != item_id
            if got.reason == OVERFLOW:
                assert self.waiting[key][0] == dropped_id, "overflow drops the oldest"
            self.waiting[key].remove(dropped_id)
            self.dropped.append(dropped_id)
        return got.reason, item_id

    def take(self) -> tuple[Any, int] | None:
        got = self.q.take()
        if got is None:
            assert self.q.waiting_keys == 0
            return None
        key, (item_key, item_id) = got
        assert key == item_key and key not in self.busy
        assert self.waiting[key][0] == item_id, "a key's items are served oldest first"
        self.waiting[key].pop(0)
        self.served.append(item_id)
        self.busy.append(key)
        return key, item_id

    def done(self, key: Any) -> None:
        self.busy.remove(key)
        freed = self.q.done(key)
        assert freed == (not self.waiting.get(key))

    def check(self) -> None:
        assert self.q.keys <= self.q.max_keys
        for key, ids in self.waiting.items():
            assert self.q.pending(key) == len(ids) <= self.q.per_key
        assert self.q.items == sum(len(ids) for ids in self.waiting.values())
        assert self.q.in_service == len(self.busy)
        assert len(set(self.served)) == len(self.served), "nothing is served twice"
        everything = self.served + self.dropped + [i for ids in self.waiting.values()
                                                   for i in ids]
        assert sorted(everything) == list(range(self.next_id)), "every item accounted once"

    def run(self, ops: list[tuple[Any, ...]]) -> None:
        for op in ops:
            if op[0] == "offer":
                self.offer(op[1], op[2])
            elif op[0] == "take":
                self.take()
            elif op[0] == "take_done":
                got = self.take()
                if got is not None:
                    self.done(got[0])
            elif self.busy:
                self.done(self.busy[op[1] % len(self.busy)])
            self.check()


@PROPS
@given(st.integers(1, 4), st.integers(1, 6), ops_st)
def test_bounds_hold_and_every_item_is_served_once_or_dropped(per_key, max_keys, ops):
    m = Model(per_key, max_keys)
    m.run(ops)
    # drain: everything still waiting is served exactly once
    while m.busy:
        m.done(m.busy[0])
    while (got := m.take()) is not None:
        m.done(got[0])
        m.check()
    assert m.q.items == 0 and m.q.keys == 0 and not any(m.waiting.values())
    m.check()


@PROPS
@given(st.integers(1, 4), st.integers(2, 8), ops_st, ops_st)
def test_a_key_with_one_item_is_served_within_one_turn_of_the_others(per_key, max_keys,
                                                                     before, after):
    m = Model(per_key, max_keys)
    m.run(before)
    target = "target"
    while not m.q.has_room(target):  # every slot is taken: let keys finish until one frees
        if m.busy:
            m.done(m.busy[0])
        else:
            got = m.take()
            assert got is not None
            m.done(got[0])
    ahead = m.q.waiting_keys
    _, item_id = m.offer(target)
    assert ahead < max_keys
    # whatever the others do next (more offers, however many; takes; dones in any order),
    # the target's one item is handed out by the (ahead + 1)-th take at the latest
    takes = 0
    for op in after + [("take_done",)] * (max_keys + 1):
        if op[0] == "offer":
            m.offer(op[1], op[2])  # the others only: the target keeps its single item
        elif op[0] in ("take", "take_done"):
            got = m.take()
            assert got is not None  # the target is in the rotation until it is served
            takes += 1
            if got[1] == item_id:
                break
            if op[0] == "take_done":
                m.done(got[0])
        elif m.busy:
            m.done(m.busy[op[1] % len(m.busy)])
        m.check()
        assert takes <= ahead, "the target waited longer than one turn of the others"
    assert item_id in m.served and takes <= ahead + 1 <= max_keys
    assert item_id not in m.dropped


@PROPS
@given(st.integers(1, 5), st.integers(1, 50))
def test_a_burst_on_one_key_drops_only_that_keys_items(per_key, burst):
    m = Model(per_key, 3)
    _, quiet = m.offer("quiet", "c")
    for i in range(burst):
        m.offer("busy", i % 3)
        m.check()
    assert quiet not in m.dropped and m.q.pending("busy") == min(burst, per_key)
    first = m.take()
    assert first is not None and first[1] == quiet  # it was waiting first


def test_a_newer_item_supersedes_the_same_collapse_key_before_the_oldest() -> None:
    q: FairQueue[str, str] = FairQueue(per_key=2, max_keys=1)
    q.offer("d", "c1-old", "c1")
    q.offer("d", "c2", "c2")
    got = q.offer("d", "c2-new", "c2")
    assert (got.reason, got.dropped) == (COLLAPSED, "c2")
    got = q.offer("d", "c3", "c3")  # nothing to collapse: the oldest goes
    assert (got.reason, got.dropped) == (OVERFLOW, "c1-old")
    assert q.offer("other", "x").reason == FULL  # the one slot is d's
    assert [q.take(), q.done("d"), q.take()] == [("d", "c2-new"), False, ("d", "c3")]
    assert q.done("d") is True and q.has_room("other")


def test_a_key_in_service_waits_for_done_before_its_next_item() -> None:
    q: FairQueue[str, int] = FairQueue(per_key=4, max_keys=4)
    for i in range(3):
        q.offer("slow", i)
    q.offer("other", 10)
    assert q.take() == ("slow", 0)
    assert q.take() == ("other", 10)
    assert q.take() is None  # slow's next waits until its first is done
    q.done("other")
    q.done("slow")
    assert q.take() == ("slow", 1)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairQueue(0, 1)
    with pytest.raises(ValueError):
        FairQueue(1, 0)
