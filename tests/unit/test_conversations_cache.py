"""The conversation cache (`runtime.conversations`): `get_many` answers cached ones from
memory and reads the others from the store together, each once, keeping them."""

from __future__ import annotations

import asyncio

import pytest

from runtime.conversations import Conversations
from runtime.ports import Conversation


class SlowStore:
    """`get_conversation` takes 10 ms; counts the reads in flight at once."""

    def __init__(self, known: set[str], fail: str = "") -> None:
        self.known, self.fail = known, fail
        self.reads: list[str] = []
        self.in_flight = self.most = 0
        self.ended = 0

    async def get_conversation(self, conv: str) -> Conversation | None:
        self.reads.append(conv)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if conv == self.fail:
                raise ConnectionError("store away")
            await asyncio.sleep(0.01)
            self.ended += 1
            return Conversation(conv, ("alice", "bob"), "local") if conv in self.known else None
        finally:
            self.in_flight -= 1


async def test_get_many_reads_the_uncached_together_and_keeps_them() -> None:
    store = SlowStore({f"c{i}" for i in range(40)})
    convs = Conversations(store)  # type: ignore[arg-type]
    await convs.get("c0")
    got = await convs.get_many(["c0", *[f"c{i}" for i in range(40)], "c1", "gone"])
    assert sorted(got) == sorted(f"c{i}" for i in range(40))  # "gone" does not exist
    assert got["c5"].members == ("alice", "bob")
    assert store.reads.count("c0") == 1 and store.reads.count("c1") == 1
    assert store.most == 32  # READS_IN_FLIGHT at once, not one after another
    reads = len(store.reads)
    assert sorted(await convs.get_many(["c3", "c39"])) == ["c3", "c39"]
    assert len(store.reads) == reads  # cached since


async def test_get_many_raises_a_failed_read_once_every_read_has_ended() -> None:
    store = SlowStore({"a", "b", "c"}, fail="b")
    with pytest.raises(ConnectionError):
        await Conversations(store).get_many(["a", "b", "c"])  # type: ignore[arg-type]
    assert store.ended == 2 and store.in_flight == 0
