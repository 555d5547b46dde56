"""`runtime.awaiting.all_of`: results in order, at most `limit` in flight, and every call
ended before a failure is raised."""

from __future__ import annotations

import asyncio

import pytest

from runtime.awaiting import all_of


async def test_results_in_order_with_at_most_limit_in_flight() -> None:
    in_flight = most = 0

    async def call(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001 * (10 - i % 10))
        in_flight -= 1
        return i

    assert await all_of((call(i) for i in range(40)), 8) == list(range(40))
    assert most == 8
    most = 0
    assert await all_of([call(i) for i in range(12)]) == list(range(12))
    assert most == 12


async def test_a_failure_is_raised_once_every_call_has_ended() -> None:
    ended: list[int] = []

    async def call(i: int) -> int:
        if i == 0:
            raise ConnectionError("away")
        await asyncio.sleep(0.01)
        ended.append(i)
        return i

    with pytest.raises(ConnectionError):
        await all_of((call(i) for i in range(5)), 2)
    assert sorted(ended) == [1, 2, 3, 4]
