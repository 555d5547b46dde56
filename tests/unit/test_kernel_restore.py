"""A sequencer whose restored state is behind the store never reuses a seq; what the
kernel reads from the store, it reads together.

The cluster sequencer restores heads from `msg.seq-state`; a broker that lost the
topic's tail in a machine crash (it had not fsynced; Cassandra had) would hand back
an older head. The kernel compares every restored head with the store's before its
first use: new messages continue after the stored head, and retries of messages in
the lost tail still get their stored seq. Run against the embedded SQLite store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.core.seqsnapshot import SnapshotBook
from runtime.core.sequencing import SequencerState, sender_key
from runtime.core.watermarks import MarkOp, Watermark
from runtime.ports import Message, Send
from runtime.sequencing import SequencingKernel, load_marks


def send(cid: str) -> Send:
    return Send("c", cid, "alice", "phone", "text", f"body {cid}", None, 1)


def stored(seq: int) -> Message:
    return Message("c", seq, seq - 1, f"m{seq}", f"k{seq}", "alice", "phone", 1, "text", "b")


async def test_a_head_restored_behind_the_store_continues_after_the_store(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "region.db")
    try:
        await store.append([stored(1), stored(2), stored(3)])
        state = SequencerState()
        # the snapshot log lost its tail: it says head 1, the store holds 1..3
        SnapshotBook().restore(state, "c", {"head": 1, "recent": [
            [sender_key("alice", "k1"), 1, 0]]})
        kernel = SequencingKernel(store, state)
        assert await kernel.head("c") == 3
        assert kernel.behind == [("c", 1, 3)]
        batch = await kernel.plan([send("k3"), send("new")])
        retry, new = batch.plan.assignments
        # the retry of an acknowledged message in the lost tail gets its stored seq
        assert retry.duplicate and (retry.seq, retry.prev) == (3, 2)
        # a new message never takes a seq the store holds
        assert not new.duplicate and (new.seq, new.prev) == (4, 3)
        kernel.commit(batch)
        assert await kernel.head("c") == 4
    finally:
        await store.close()


async def test_a_head_restored_ahead_of_the_store_is_kept(tmp_path: Path) -> None:
    """The usual case: the store lags the log (the router writes after the commit)."""
    store = SqliteStore(tmp_path / "region.db")
    try:
        await store.append([stored(1)])
        state = SequencerState()
        SnapshotBook().restore(state, "c", {"head": 2, "recent": [
            [sender_key("alice", "k1"), 1, 0], [sender_key("alice", "k2"), 2, 1]]})
        kernel = SequencingKernel(store, state)
        batch = await kernel.plan([send("k2"), send("n")])
        retry, new = batch.plan.assignments
        assert retry.duplicate and retry.seq == 2
        assert (new.seq, new.prev) == (3, 2)
        assert kernel.behind == []
    finally:
        await store.close()


async def test_a_batch_reads_the_heads_it_has_not_compared_together(tmp_path: Path) -> None:
    """A batch over several conversations not compared with the store yet (new ones, or
    every one after a restart) asks the store for their heads in one call, which the
    Cassandra store answers with reads in flight together, not one after another."""
    store = SqliteStore(tmp_path / "region.db")
    try:
        await store.append([stored(1), stored(2)])
        calls: list[tuple[str, list[str]]] = []
        real_head, real_heads = store.head, store.heads

        async def head(conv: str) -> int:
            calls.append(("head", [conv]))
            return await real_head(conv)

        async def heads(convs: list[str]) -> dict[str, int]:
            calls.append(("heads", list(convs)))
            return await real_heads(convs)

        store.head, store.heads = head, heads  # type: ignore[method-assign]
        kernel = SequencingKernel(store)
        sends = [send("a"), Send("d", "x", "bob", "phone", "text", "hi", None, 1),
                 send("b"), Send("e", "y", "bob", "phone", "text", "hi", None, 1)]
        batch = await kernel.plan(sends, also={"f"})
        assert len(calls) == 1 and calls[0][0] == "heads"
        assert sorted(calls[0][1]) == ["c", "d", "e", "f"]
        assert [(a.conv, a.seq) for a in batch.plan.assignments] == \
            [("c", 3), ("d", 1), ("c", 4), ("e", 1)]
        kernel.commit(batch)
        await kernel.plan([send("g")], also={"d"})  # all compared already: no read
        assert len(calls) == 1
    finally:
        await store.close()


async def test_watermarks_not_cached_are_read_together_and_a_failure_waits_for_all() -> None:
    """`load_marks`: the cached marks as they are, the others read with several reads in
    flight (each new pair's first ack waited for the one before), each pair once; a
    failed read is raised only once every read has ended."""
    ops = [MarkOp("ack", f"c{i % 5}", "bob", "phone", 3) for i in range(10)] + \
        [MarkOp("read", "c0", "carol", "laptop", 2)]
    in_flight, most, reads = 0, 0, []

    async def read(user: str, conv: str) -> Watermark:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        reads.append((conv, user))
        await asyncio.sleep(0.01)
        in_flight -= 1
        return Watermark(1, 0)

    cached = {("c1", "bob"): Watermark(7, 7)}
    marks = await load_marks(ops, lambda conv, user: cached.get((conv, user)), read)
    assert marks[("c1", "bob")] == Watermark(7, 7)
    assert sorted(reads) == [("c0", "bob"), ("c0", "carol"), ("c2", "bob"), ("c3", "bob"),
                             ("c4", "bob")]
    assert all(marks[k] == Watermark(1, 0) for k in reads)
    assert most == 5

    ended: list[str] = []

    async def flaky(user: str, conv: str) -> Watermark:
        if conv == "c0" and user == "bob":
            raise ConnectionError("store away")
        await asyncio.sleep(0.02)
        ended.append(conv)
        return Watermark()

    with pytest.raises(ConnectionError):
        await load_marks(ops, lambda conv, user: None, flaky)
    assert len(ended) == 5  # the others' reads ended before the error was raised


def window(head: int, size: int = 32) -> dict:
    """A snapshot of conversation c at `head` with the last `size` cids k<seq>."""
    return {"head": head, "recent": [[sender_key("alice", f"k{s}"), s, s - 1]
                                     for s in range(max(1, head - size + 1), head + 1)]}


async def test_a_cid_lookup_waits_until_the_store_holds_what_the_window_does_not(
        tmp_path: Path) -> None:
    """After a restart the store can lag the restored head (the router writes after the
    commit). A retry of a message older than the snapshot's window, not stored yet, must
    not become a second message: its send is deferred (no answer; the client retries)
    until the store holds everything the window does not, then answered with its seq."""
    store = SqliteStore(tmp_path / "region.db")
    try:
        await store.append([stored(s) for s in range(1, 4)])
        state = SequencerState()
        SnapshotBook().restore(state, "c", window(40))  # the window holds 9..40
        kernel = SequencingKernel(store, state)
        batch = await kernel.plan([send("k5"), send("k20")])
        retry_old, retry_in_window = batch.plan.assignments
        assert retry_old.deferred and not retry_old.duplicate and retry_old.seq == 0
        assert not batch.made and batch.plan.heads == {}
        assert retry_in_window.duplicate and retry_in_window.seq == 20
        # a new cid is deferred too: only the store could say it is not a retry
        assert (await kernel.plan([send("new")])).plan.assignments[0].deferred
        await store.append([stored(s) for s in range(4, 9)])  # the router caught up to 8
        batch = await kernel.plan([send("k5"), send("new")])
        retry_old, new = batch.plan.assignments
        assert retry_old.duplicate and (retry_old.seq, retry_old.prev) == (5, 4)
        assert not new.deferred and (new.seq, new.prev) == (41, 40)
    finally:
        await store.close()


async def test_a_store_that_never_catches_up_is_trusted_after_a_while(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store whose head moves nothing for `STORE_CATCH_UP_S` lost what it lags by (a
    broker that lost the log's tail): the conversation is not refused for good; its
    lookups go to the store as it is, and a send it does not know is a new message. While
    the head moves, the wait goes on."""
    monkeypatch.setattr("runtime.sequencing.STORE_CATCH_UP_S", 0.05)
    store = SqliteStore(tmp_path / "region.db")
    try:
        await store.append([stored(1)])
        state = SequencerState()
        SnapshotBook().restore(state, "c", window(40))
        kernel = SequencingKernel(store, state)
        assert (await kernel.plan([send("k5")])).plan.assignments[0].deferred
        await asyncio.sleep(0.1)
        await store.append([stored(2)])  # catching up: the wait starts again
        assert (await kernel.plan([send("k5")])).plan.assignments[0].deferred
        await asyncio.sleep(0.1)
        batch = await kernel.plan([send("k5")])
        assert not batch.plan.assignments[0].deferred
        assert (batch.plan.assignments[0].seq, batch.plan.assignments[0].prev) == (41, 40)
    finally:
        await store.close()
