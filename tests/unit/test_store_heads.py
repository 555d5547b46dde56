"""Batched heads and reads off the event loop (a user in thousands of conversations).

`MessageStore.heads` answers a whole list in a bounded number of requests; the
sequencing kernel, the embedded `Ingest` and the cluster gateway's `ClusterIngest`
build theirs on it with the semantics of their `head`. The embedded SQLite store
keeps a short read on the loop's thread and runs a long one on its reader
threads, with the same answer either way, and a read issued after an
acknowledged write sees it. The Cassandra `heads` is checked here
with its per-conversation `head` stubbed (no Cassandra needed); the shared store
contract (tests/contract) runs it against a real one.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.adapters.cluster import cassandra_store
from runtime.adapters.cluster.cassandra_store import CassandraStore
from runtime.adapters.embedded import sqlite_store
from runtime.adapters.embedded.memory import EmbeddedEventLog
from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.cluster.gateway_link import ClusterIngest
from runtime.core.seqsnapshot import SnapshotBook
from runtime.core.sequencing import SequencerState, sender_key
from runtime.core.watermarks import Watermark
from runtime.ports import Conversation, Message, Send
from runtime.sequencer import Ingest
from runtime.sequencing import SequencingKernel


def msg(conv: str, seq: int) -> Message:
    return Message(conv, seq, seq - 1, f"m-{conv}-{seq}", f"c{seq}", "alice", "phone", 1,
                   "text", "b")


def send(conv: str, cid: str) -> Send:
    return Send(conv, cid, "alice", "phone", "text", "b", None, 1)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "region.db")
    yield s
    await s.close()


class Counting:
    """A MessageStore wrapper that counts the store's head reads."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.head_calls: list[str] = []
        self.heads_calls: list[list[str]] = []

    async def head(self, conv: str) -> int:
        self.head_calls.append(conv)
        return await self.inner.head(conv)

    async def heads(self, convs: list[str]) -> dict[str, int]:
        self.heads_calls.append(list(convs))
        return await self.inner.heads(convs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- SQLite: heads ----------------------------------------------------------------------
async def test_sqlite_heads_one_query_per_chunk(store: SqliteStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    convs = [f"c{i}" for i in range(10)]
    await store.append([msg(c, s) for i, c in enumerate(convs) for s in range(1, i + 1)])
    jobs = 0
    real = store._rows

    async def rows(sql: str, params: Any, **kw: Any) -> list[Any]:
        nonlocal jobs
        jobs += 1
        return await real(sql, params, **kw)

    monkeypatch.setattr(store, "_rows", rows)
    monkeypatch.setattr(sqlite_store, "HEADS_CHUNK", 3)
    heads = await store.heads(convs + ["unknown", "c4"])
    assert heads == {**{c: i for i, c in enumerate(convs)}, "unknown": 0}
    assert jobs == 4  # 11 distinct conversations, 3 a query


async def test_sqlite_heads_of_thousands(store: SqliteStore) -> None:
    convs = [f"conv-{i:05d}" for i in range(2 * sqlite_store.HEADS_CHUNK + 3)]
    await store.append([msg(c, s) for i, c in enumerate(convs) for s in (1, 2)
                        if i % 3 or s == 1])
    heads = await store.heads(convs)
    assert heads == {c: (2 if i % 3 else 1) for i, c in enumerate(convs)}


# -- SQLite: reads off the loop ----------------------------------------------------------
def record_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread of every statement the store runs from now on."""
    threads: list[str] = []
    real = sqlite_store._fetch

    def fetch(conn: Any, sql: str, params: Any) -> list[Any]:
        threads.append(threading.current_thread().name)
        return real(conn, sql, params)

    monkeypatch.setattr(sqlite_store, "_fetch", fetch)
    return threads


async def every_read(store: SqliteStore, user: str, conv: str) -> list[Any]:
    return [await store.get_conversation(conv), await store.conversations_of(user),
            await store.head(conv), await store.heads([conv, "nope"]),
            await store.messages(conv, 0, 10), await store.message(conv, 2),
            await store.lookup_cid(conv, "alice", "c2"),
            await store.device_state(user, "phone"), await store.watermark(user, conv)]


async def test_every_read_answers_the_same_on_the_loop_and_on_a_reader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inline = SqliteStore(tmp_path / "region.db")
    pooled = SqliteStore(tmp_path / "region.db", inline_steps=0)  # never on the loop
    try:
        user = "alice"
        convs = [f"c{i:04d}" for i in range(1500)]  # past the inline budget
        for conv in convs[:3]:
            await inline.create_conversation(Conversation(conv, (user, "bob"), "local"))
        await inline.write(lambda conn: conn.executemany(
            "INSERT INTO members VALUES (?,?)", [(user, c) for c in convs[3:]]))
        await inline.append([msg("c0000", s) for s in (1, 2, 3)])
        await inline.register_device(user, "phone", dict.fromkeys(convs, 1))
        await inline.set_watermark(user, "c0000", Watermark(2, 1))
        await inline.write(lambda conn: None)  # the writer commits in order: a barrier
        threads = record_threads(monkeypatch)
        for conv in ("c0000", "c0001"):
            for u in (user, "bob"):
                assert await every_read(inline, u, conv) == await every_read(pooled, u, conv)
        assert any(t == "MainThread" for t in threads)
        assert any(t.startswith("sqlite-read") for t in threads)
        threads.clear()
        assert len(await pooled.conversations_of(user)) == 1500
        assert threads and all(t.startswith("sqlite-read") for t in threads), threads
    finally:
        await inline.close()
        await pooled.close()


async def test_a_short_read_stays_on_the_loop_a_long_one_goes_to_a_reader(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await store.create_conversation(Conversation("c", ("alice", "bob"), "local"))
    await store.append([msg("c", 1)])
    await store.write(lambda conn: conn.executemany(
        "INSERT INTO members VALUES (?,?)", [("big", f"c{i:05d}") for i in range(3000)]))
    threads = record_threads(monkeypatch)
    # a user in one conversation: no thread hop (the common case is not slower)
    assert await store.conversations_of("alice") == ["c"]
    assert await store.head("c") == 1
    assert [m.seq for m in await store.messages("c", 0, 10)] == [1]
    assert threads == ["MainThread"] * 3
    threads.clear()
    # past the budget: interrupted on the loop, then read whole by a reader thread
    assert await store.conversations_of("big") == [f"c{i:05d}" for i in range(3000)]
    assert threads[0] == "MainThread" and threads[-1].startswith("sqlite-read"), threads
    threads.clear()
    assert len(await store.heads([f"c{i:05d}" for i in range(3000)])) == 3000
    assert threads and all(t.startswith("sqlite-read") for t in threads), threads


async def test_a_read_in_progress_leaves_the_loop_free(store: SqliteStore) -> None:
    # the read waits for something only the event loop does: on the loop it would hang
    released = threading.Event()

    def blocking(conn: Any) -> int:
        assert released.wait(5)
        return int(conn.execute("SELECT 1").fetchone()[0])

    reading = asyncio.ensure_future(store.read(blocking, inline=False))
    await asyncio.sleep(0.01)
    assert not reading.done()
    released.set()
    assert await asyncio.wait_for(reading, 5) == 1


async def test_reads_see_every_acknowledged_write(store: SqliteStore) -> None:
    # each reader keeps its connection: none may hold an old snapshot between reads
    for seq in range(1, 101):
        await store.append([msg("c", seq)])
        head, heads, page = await asyncio.gather(
            store.head("c"), store.heads(["c"]), store.messages("c", seq - 1, 5))
        assert head == seq and heads == {"c": seq} and [m.seq for m in page] == [seq]
    await store.set_cursor("alice", "phone", "c", 7)  # queued, not awaited
    await store.write(lambda conn: None)  # the writer commits in order: a barrier
    assert (await store.device_state("alice", "phone")).cursors == {"c": 7}


async def test_close_closes_the_reader_connections(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "region.db", readers=2)
    await asyncio.gather(*(store.read(lambda conn: conn.execute("SELECT 1").fetchall(),
                                      inline=False) for _ in range(8)))
    assert store._inline is not None
    conns = [*store._reader_conns, store._inline]
    assert 2 <= len(conns) <= 3
    await store.close()
    for conn in conns:
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")


# -- the kernel and the ingests ----------------------------------------------------------
async def test_kernel_heads_asks_the_store_once_in_a_batch(store: SqliteStore) -> None:
    await store.append([msg("a", 1), msg("a", 2), msg("b", 1)])
    counting = Counting(store)
    kernel = SequencingKernel(counting)  # type: ignore[arg-type]
    assert await kernel.head("a") == 2  # checked: never read again
    assert await kernel.heads(["a", "b", "c", "b"]) == {"a": 2, "b": 1, "c": 0}
    assert counting.heads_calls == [["b", "c"]]
    # the kernel's head is the truth once ahead of the store (the append is the caller's)
    batch = await kernel.plan([send("b", "new")])
    kernel.commit(batch)
    assert await kernel.heads(["a", "b", "c"]) == {"a": 2, "b": 2, "c": 0}
    assert counting.heads_calls == [["b", "c"]] and counting.head_calls == ["a"]
    assert await kernel.head("b") == 2


async def test_kernel_heads_catches_a_restored_head_behind_the_store(
        store: SqliteStore) -> None:
    await store.append([msg("c", 1), msg("c", 2), msg("c", 3)])
    state = SequencerState()
    SnapshotBook().restore(state, "c", {"head": 1, "recent": [
        [sender_key("alice", "c1"), 1, 0]]})
    kernel = SequencingKernel(store, state)
    assert await kernel.heads(["c"]) == {"c": 3}
    assert kernel.behind == [("c", 1, 3)]
    batch = await kernel.plan([send("c", "c3"), send("c", "new")])
    retry, new = batch.plan.assignments
    assert retry.duplicate and retry.seq == 3  # its stored seq, found in the store
    assert (new.seq, new.prev) == (4, 3)


async def test_embedded_ingest_heads_is_the_kernels(store: SqliteStore) -> None:
    await store.append([msg("a", 1)])
    ingest = Ingest(EmbeddedEventLog(store), store)
    await ingest.start()
    try:
        sent = await ingest.submit(send("a", "x"))
        assert sent.seq == 2
        assert await ingest.heads(["a", "z"]) == {"a": 2, "z": 0}
        assert await ingest.heads([]) == {}
    finally:
        await ingest.stop()


async def test_cluster_ingest_heads_take_the_newer_of_stored_and_routed(
        store: SqliteStore) -> None:
    await store.append([msg("a", 1), msg("a", 2), msg("b", 1)])
    ingest = ClusterIngest(None, store, "gw-1")  # type: ignore[arg-type]
    ingest.note_head("a", 1)  # the store is ahead
    ingest.note_head("b", 5)  # routed here, not in the store yet
    ingest.note_head("r", 3)
    assert await ingest.heads(["a", "b", "r", "n"]) == {"a": 2, "b": 5, "r": 3, "n": 0}
    for conv in ("a", "b", "r", "n"):
        assert (await ingest.heads([conv]))[conv] == await ingest.head(conv)


# -- Cassandra: the bounded fan-out (its head stubbed) -------------------------------------
async def test_cassandra_heads_bounds_the_reads_in_flight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = CassandraStore(["127.0.0.1"])
    inflight = peak = calls = 0

    async def head(conv: str) -> int:
        nonlocal inflight, peak, calls
        calls += 1
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001)
        inflight -= 1
        return int(conv[1:])

    monkeypatch.setattr(store, "head", head)
    convs = [f"c{i}" for i in range(500)]
    assert await store.heads(convs + convs[:10]) == {c: int(c[1:]) for c in convs}
    assert calls == 500
    assert peak == cassandra_store.HEADS_IN_FLIGHT
    assert await store.heads([]) == {}


async def test_cassandra_heads_stops_at_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    store = CassandraStore(["127.0.0.1"])
    calls = 0

    async def head(conv: str) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.001)
        if conv == "c40":
            raise cassandra_store.StoreUnavailable("down")
        return 1

    monkeypatch.setattr(store, "head", head)
    with pytest.raises(cassandra_store.StoreUnavailable):
        await store.heads([f"c{i}" for i in range(1000)])
    # the workers stop taking more once one failed (those in flight finish)
    assert calls < 40 + 2 * cassandra_store.HEADS_IN_FLIGHT


@pytest.mark.parametrize(("strategy", "local_dc", "beside"), [
    (SimpleNamespace(dc_replication_factors={"us-east": 1, "eu-west": 1}), "us-east", True),
    (SimpleNamespace(dc_replication_factors={"us-east": 3, "eu-west": 1}), "us-east", False),
    (SimpleNamespace(dc_replication_factors={"eu-west": 1}), "us-east", False),
    (SimpleNamespace(dc_replication_factors={"us-east": 1}), "", False),
    (SimpleNamespace(replication_factor=1), "", True),
    (SimpleNamespace(replication_factor=2), "", False),
    (None, "us-east", False),
])
def test_heads_go_beside_the_messages_only_with_one_replica_in_the_data_center(
        strategy: Any, local_dc: str, beside: bool) -> None:
    """With several replicas in a data center, a write that failed after reaching one
    could let a quorum read see a head before a message under it (see `store_messages`):
    then every head stays a second write."""
    store = CassandraStore(["127.0.0.1"], keyspace="ks", local_dc=local_dc,
                           replication={"us-east": 1})
    keyspaces = {"ks": SimpleNamespace(replication_strategy=strategy)} if strategy else {}
    cluster: Any = SimpleNamespace(metadata=SimpleNamespace(keyspaces=keyspaces))
    assert store._one_local_replica(cluster) is beside
