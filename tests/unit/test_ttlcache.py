"""TtlCache: entries expire, the least recently used go first, and a fill that raced a
`forget` or `clear` is not kept (the push runtime's token cache relies on it)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core.ttlcache import TtlCache


def test_an_entry_lives_ttl_seconds() -> None:
    cache: TtlCache[str, int] = TtlCache(5.0)
    assert cache.put("a", 1, 100.0, cache.ticket("a"))
    assert cache.get("a", 104.9) == (True, 1)
    assert cache.get("a", 105.0) == (False, None)
    assert len(cache) == 0


def test_a_fill_that_raced_a_forget_is_dropped() -> None:
    cache: TtlCache[str, list[str]] = TtlCache(5.0)
    ticket = cache.ticket("bob")          # the read starts
    cache.forget("bob")                   # the token changes meanwhile
    assert not cache.put("bob", [], 1.0, ticket)  # the read's (old) answer is not kept
    assert cache.get("bob", 1.0) == (False, None)
    assert cache.put("bob", ["new"], 1.0, cache.ticket("bob"))  # a read after it is
    assert cache.get("bob", 1.0) == (True, ["new"])


def test_a_forget_of_another_key_does_not_drop_the_fill() -> None:
    cache: TtlCache[str, int] = TtlCache(5.0)
    ticket = cache.ticket("a")
    cache.forget("b")
    assert cache.put("a", 1, 0.0, ticket)


def test_clear_drops_everything_and_every_fill_under_way() -> None:
    cache: TtlCache[str, int] = TtlCache(5.0)
    cache.put("a", 1, 0.0, cache.ticket("a"))
    ticket = cache.ticket("b")
    cache.clear()
    assert cache.get("a", 0.0) == (False, None)
    assert not cache.put("b", 2, 0.0, ticket)


def test_capacity_evicts_the_least_recently_used() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, capacity=2)
    for k in "ab":
        cache.put(k, 0, 0.0, cache.ticket(k))
    cache.get("a", 1.0)  # a is used: b is the oldest now
    cache.put("c", 0, 1.0, cache.ticket("c"))
    assert [cache.get(k, 1.0)[0] for k in "abc"] == [True, False, True]


def test_ttl_zero_keeps_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0.0)
    assert not cache.put("a", 1, 0.0, cache.ticket("a"))
    with pytest.raises(ValueError):
        TtlCache(-1.0)


@given(st.lists(st.tuples(st.sampled_from(["get", "put", "forget", "clear", "start"]),
                          st.sampled_from("abc")), max_size=60))
def test_never_returns_a_value_read_before_its_keys_last_change(ops: list[tuple[str, str]]
                                                                ) -> None:
    """Model: the source has a version per key, bumped by forget (and all by clear); a
    read takes the version when it starts and is put later. A get may only ever return
    the key's current version."""
    cache: TtlCache[str, int] = TtlCache(1e9, capacity=2)
    version = {k: 0 for k in "abc"}
    started: dict[str, tuple[tuple[int, int], int]] = {}
    for op, k in ops:
        if op == "start":
            started[k] = (cache.ticket(k), version[k])
        elif op == "put" and k in started:
            ticket, seen = started.pop(k)
            cache.put(k, seen, 0.0, ticket)
        elif op == "forget":
            version[k] += 1
            cache.forget(k)
        elif op == "clear":
            for key in version:
                version[key] += 1
            cache.clear()
        elif op == "get":
            hit, value = cache.get(k, 0.0)
            assert not hit or value == version[k]
