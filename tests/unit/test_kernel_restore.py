"""A sequencer whose restored state is behind the store never reuses a seq.

The cluster sequencer restores heads from `msg.seq-state`; a broker that lost the
topic's tail in a machine crash (it had not fsynced; Cassandra had) would hand back
an older head. The kernel compares every restored head with the store's before its
first use: new messages continue after the stored head, and retries of messages in
the lost tail still get their stored seq. Run against the embedded SQLite store.
"""

from __future__ import annotations

from pathlib import Path

from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.core.seqsnapshot import SnapshotBook
from runtime.core.sequencing import SequencerState, sender_key
from runtime.ports import Message, Send
from runtime.sequencing import SequencingKernel


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
