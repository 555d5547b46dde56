"""Awaiting many store calls at once, the way every runtime needs it: none is left
running unwatched when one fails, and at most `limit` are in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def all_of(calls: Iterable[Awaitable[T]], limit: int | None = None) -> list[T]:
    """The results of `calls` in order, at most `limit` awaited at once (None: all);
    every call ends before the first failure is raised."""
    if limit is None:
        pending = list(calls)
    else:
        gate = asyncio.Semaphore(limit)

        async def gated(call: Awaitable[T]) -> T:
            async with gate:
                return await call

        pending = [gated(c) for c in calls]
    results = await asyncio.gather(*pending, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception is left in it
