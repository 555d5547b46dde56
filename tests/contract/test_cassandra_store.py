"""CassandraStore beyond the shared contract: failure modes, schema, the writer under load."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture
from cassandra.policies import DCAwareRoundRobinPolicy
from cassandra.query import BatchStatement, BoundStatement

from runtime.adapters.cluster import cql_schema
from runtime.adapters.cluster.cassandra_store import CassandraStore, StoreUnavailable
from runtime.config import EnginesConfig
from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS
from runtime.ports import Conversation, Message
from tests.contract.conftest import CLUSTER_AUTH, TEST_BUCKET_SIZE, cassandra_store

Endpoint = tuple[str, int, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FreezableProxy:
    """A TCP proxy in front of Cassandra that can go silent (a partition) on demand."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self.frozen.is_set():  # frozen: swallow, answer nothing
                    dst.sendall(data)

    def close(self) -> None:
        self.server.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def proxy(cassandra_endpoint: Endpoint) -> Iterator[FreezableProxy]:
    p = FreezableProxy(cassandra_endpoint[:2])
    yield p
    p.close()


async def test_closed_port_raises_store_unavailable_promptly() -> None:
    store = CassandraStore(["127.0.0.1"], free_port(), "contract_never", "local", {"local": 1},
                           connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await store.connect()
    assert time.monotonic() - started < 10


async def test_silent_server_raises_store_unavailable_within_the_timeout() -> None:
    # accepts connections and never answers: the driver must give up, not hang
    with socket.create_server(("127.0.0.1", 0)) as server:
        store = CassandraStore(["127.0.0.1"], server.getsockname()[1], "contract_never",
                               "local", {"local": 1}, connect_timeout=2.0)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.connect()
        assert time.monotonic() - started < 12


async def test_not_connected_and_closed_raise_store_unavailable(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    never = CassandraStore(["127.0.0.1"], 1, "contract_never", "local", {"local": 1})
    with pytest.raises(StoreUnavailable):
        await never.head("c")
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.head("c")


async def test_a_partition_raises_store_unavailable_without_blocking_the_loop(
        proxy: FreezableProxy, cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    host, _, dc = cassandra_endpoint
    store = CassandraStore([host], proxy.port, cassandra_keyspace, dc, {dc: 1},
                           bucket_size=TEST_BUCKET_SIZE, request_timeout=1.5,
                           auth=CLUSTER_AUTH)
    await store.connect()
    try:
        conv = f"conv-{uuid.uuid4().hex[:8]}"
        await store.upsert_messages([_msg(conv, 1)])
        assert await store.head(conv) == 1
        proxy.frozen.set()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.head(conv)
        with pytest.raises(StoreUnavailable):
            await store.upsert_messages([_msg(conv, 2)])
        elapsed = time.monotonic() - started
        task.cancel()
        assert elapsed < 8, elapsed
        assert ticks >= elapsed / 0.05 * 0.5, (ticks, elapsed)  # the loop kept running
    finally:
        proxy.frozen.clear()
        await store.close()


async def test_a_down_store_raises_promptly(
        proxy: FreezableProxy, cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    host, _, dc = cassandra_endpoint
    store = CassandraStore([host], proxy.port, cassandra_keyspace, dc, {dc: 1},
                           bucket_size=TEST_BUCKET_SIZE, request_timeout=2.0,
                           auth=CLUSTER_AUTH)
    await store.connect()
    try:
        proxy.close()  # every connection drops, nothing listens any more
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            for _ in range(5):  # the first may still be in flight on a dying connection
                await store.watermark("u", "c")
        assert time.monotonic() - started < 8
    finally:
        await store.close()


def _msg(conv: str, seq: int, sender: str = "alice") -> Message:
    return Message(conv, seq, seq - 1, f"m{seq}", f"c{seq}", sender, "phone", seq, "text",
                   f"body {seq}")


# -- schema ---------------------------------------------------------------------
@pytest.fixture
def session(cassandra_endpoint: Endpoint) -> Iterator[object]:
    host, port, dc = cassandra_endpoint
    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(dc))
    cluster = Cluster([host], port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile}, **CLUSTER_AUTH)
    yield cluster.connect()
    cluster.shutdown()


def test_ensure_schema_is_idempotent_and_records_migrations(
        session: object, cassandra_endpoint: Endpoint) -> None:
    dc = cassandra_endpoint[2]
    keyspace = f"contract_schema_{uuid.uuid4().hex[:8]}"
    try:
        cql_schema.ensure_schema(session, keyspace, {dc: 1})
        cql_schema.ensure_schema(session, keyspace, {dc: 1})
        assert cql_schema.applied_versions(session, keyspace) == {
            m.version for m in cql_schema.MIGRATIONS}
        assert max(m.version for m in cql_schema.MIGRATIONS) == cql_schema.SCHEMA_VERSION
        row = session.execute("SELECT replication FROM system_schema.keyspaces "
                              "WHERE keyspace_name = %s", (keyspace,)).one()
        assert row.replication["class"].endswith("NetworkTopologyStrategy")
        assert row.replication[dc] == "1"
        tables = {r.table_name for r in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))}
        assert {"messages", "message_cids", "sender_cids", "conv_heads", "conversations",
                "user_conversations", "device_cursors", "watermarks", "push_tokens",
                "schema_migrations", "store_settings"} <= tables
        head = session.execute("SELECT kind FROM system_schema.columns WHERE keyspace_name = "
                               "%s AND table_name = 'messages' AND column_name = 'head'",
                               (keyspace,)).one()
        assert head is not None and head.kind == "static"  # migration 4
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


def test_a_missing_migration_is_applied_on_the_next_run(
        session: object, cassandra_endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    dc = cassandra_endpoint[2]
    keyspace = f"contract_schema_{uuid.uuid4().hex[:8]}"
    try:
        cql_schema.ensure_schema(session, keyspace, {dc: 1})
        extra = cql_schema.Migration(cql_schema.SCHEMA_VERSION + 1, "test column", (
            "ALTER TABLE {ks}.push_tokens ADD IF NOT EXISTS added_by_test text",))
        monkeypatch.setattr(cql_schema, "MIGRATIONS", (*cql_schema.MIGRATIONS, extra))
        cql_schema.ensure_schema(session, keyspace, {dc: 1})
        cql_schema.ensure_schema(session, keyspace, {dc: 1})
        assert extra.version in cql_schema.applied_versions(session, keyspace)
        session.execute(f"SELECT added_by_test FROM {keyspace}.push_tokens LIMIT 1")
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


def test_invalid_names_are_refused() -> None:
    with pytest.raises(ValueError):
        cql_schema.check_keyspace("ks; DROP KEYSPACE system")
    with pytest.raises(ValueError):
        cql_schema.keyspace_cql("ok", {"dc'1": 1})
    with pytest.raises(ValueError):
        cql_schema.keyspace_cql("ok", {})


async def test_bucket_size_is_pinned_by_the_keyspace(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    # the contract stores created the session keyspace with TEST_BUCKET_SIZE
    adopted = await cassandra_store(cassandra_endpoint, cassandra_keyspace, bucket_size=None)
    assert adopted.bucket_size == TEST_BUCKET_SIZE
    await adopted.close()
    with pytest.raises(ValueError, match="bucket size"):
        await cassandra_store(cassandra_endpoint, cassandra_keyspace,
                              bucket_size=TEST_BUCKET_SIZE + 1)


def test_from_config() -> None:
    engines = EnginesConfig(cassandra_hosts=["10.0.0.1", "10.0.0.2"], cassandra_port=9043,
                            cassandra_dc="eu-west", keyspace="msgctl_eu",
                            replication={"eu-west": 3, "us-east": 3})
    store = CassandraStore.from_config(engines, request_timeout=2.0)
    assert (store.hosts, store.port, store.keyspace, store.local_dc, store.replication,
            store.request_timeout) == (["10.0.0.1", "10.0.0.2"], 9043, "msgctl_eu", "eu-west",
                                       {"eu-west": 3, "us-east": 3}, 2.0)


# -- the writer under load ------------------------------------------------------------
async def test_concurrent_overlapping_writers_converge(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    """Two writers (an old owner replaying, a new one) racing over the same messages."""
    a = await cassandra_store(cassandra_endpoint, cassandra_keyspace, max_inflight=32)
    b = await cassandra_store(cassandra_endpoint, cassandra_keyspace, max_inflight=32)
    try:
        convs = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        # small: the dev Cassandra syncs its commit log per write group (~750 writes/s)
        batches = [[_msg(c, s) for s in range(start, start + 25)]
                   for c in convs for start in range(1, 200, 25)]
        await asyncio.gather(*(a.upsert_messages(x) for x in batches),
                             *(b.upsert_messages(x) for x in reversed(batches)))
        for conv in convs:
            assert await a.head(conv) == 200
            got = await b.messages(conv, 0, 1000)
            assert [m.seq for m in got] == list(range(1, 201))
            assert await a.lookup_cid(conv, "alice", "c150") == (150, 149)
    finally:
        await a.close()
        await b.close()


async def test_a_store_that_creates_its_keyspace_knows_it_keeps_one_replica(
        session: object, cassandra_endpoint: Endpoint) -> None:
    keyspace = f"contract_fresh_{uuid.uuid4().hex[:8]}"
    store = await cassandra_store(cassandra_endpoint, keyspace)
    try:
        assert store.heads_beside
    finally:
        await store.close()
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


async def test_cids_written_before_migration_5_are_still_found(
        session: object, cassandra_endpoint: Endpoint) -> None:
    """The cid index moved to `sender_cids` (a partition per sender and conversation);
    rows of the old `message_cids` still answer a retry, asked only while it has any."""
    keyspace = f"contract_cids_{uuid.uuid4().hex[:8]}"
    store = await cassandra_store(cassandra_endpoint, keyspace)
    again = None
    try:
        assert not store.old_cids  # a new keyspace: nothing in the old index
        await store.upsert_messages([_msg("conv-new", 1), _msg("conv-new", 2, sender="bob")])
        new_rows = session.execute(f"SELECT sender, cid, seq, prev FROM {keyspace}.sender_cids "
                                   "WHERE conv = 'conv-new' AND sender = 'alice'").all()
        assert [tuple(r) for r in new_rows] == [("alice", "c1", 1, 0)]
        assert session.execute(f"SELECT cid FROM {keyspace}.message_cids LIMIT 1").one() is None
        # a row as the store wrote it before migration 5
        session.execute(f"INSERT INTO {keyspace}.message_cids (conv, sender, cid, seq, prev) "
                        "VALUES ('conv-old', 'alice', 'c7', 7, 6)")
        assert await store.lookup_cid("conv-old", "alice", "c7") is None  # not asked
        again = await cassandra_store(cassandra_endpoint, keyspace)
        assert again.old_cids
        assert await again.lookup_cid("conv-old", "alice", "c7") == (7, 6)
        assert await again.lookup_cid("conv-old", "bob", "c7") is None
        assert await again.lookup_cid("conv-new", "bob", "c2") == (2, 1)
    finally:
        await store.close()
        if again is not None:
            await again.close()
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


async def test_a_head_goes_beside_its_messages_only_inside_the_bucket_of_the_last(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    """A batch's head is written in its messages' partition (one mutation) while the
    conversation stays in a bucket; a batch that enters a bucket leaves its head to
    `set_heads`, and until then the head readers see stays where it was."""
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    try:
        assert store.heads_beside  # the test node's data center keeps one replica
        conv = f"conv-{uuid.uuid4().hex[:8]}"
        first = [_msg(conv, 1), _msg(conv, 2)]
        # a conversation's first messages: conv_heads is written by `set_heads`
        assert await store.store_messages(first, {conv}) == set()
        assert await store.head(conv) == 0
        await store.set_heads(first)
        assert await store.store_messages([_msg(conv, 3)], {conv}) == {conv}
        assert await store.head(conv) == 3  # conv_heads says 2, bucket 0's own head 3
        assert await store.heads([conv]) == {conv: 3}
        # 9 -> 10, 11 crosses from bucket 0 into bucket 1 (TEST_BUCKET_SIZE 10)
        entering = [_msg(conv, s) for s in range(4, 12)]
        assert await store.store_messages(entering, {conv}) == set()
        assert await store.head(conv) == 3
        await store.set_heads(entering)
        assert await store.head(conv) == 11
        assert await store.store_messages([_msg(conv, 12)], {conv}) == {conv}
        assert await store.head(conv) == 12
        assert await store.store_messages([_msg(conv, 13)], {conv}) == {conv}
        assert await store.head(conv) == 13
        # replaying an older batch of the same bucket, either way, never moves it back
        assert await store.store_messages([_msg(conv, 12)], {conv}) == {conv}
        await store.upsert_messages([_msg(conv, 12)])
        assert await store.head(conv) == 13
        assert [m.seq for m in await store.messages(conv, 0, 100)] == list(range(1, 14))
        # not asked for, or too large for one request: the head is left to the caller
        assert await store.store_messages([_msg(conv, 14)]) == set()
        big = dataclasses.replace(_msg(conv, 15), body="x" * 5000)
        assert await store.store_messages([big], {conv}) == set()
        assert await store.head(conv) == 13
        # a bucket whose rows were deleted keeps its head (a monotonic register)
        await store.delete_messages(conv, [12, 13, 14, 15])
        assert await store.head(conv) == 13
    finally:
        await store.close()


async def test_a_mixed_batch_is_written_whole_and_quietly(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Small messages of many conversations share requests (`pack`), large ones go
    alone; every row lands, and Cassandra sends back no warning (the driver logs each
    as "Server warning": a batch over 5 KiB or 10 partitions would be one)."""
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    try:
        convs = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(23)]
        batch = [_msg(c, 1) for c in convs]
        batch += [dataclasses.replace(_msg(convs[0], s), body="x" * 16_000) for s in (2, 3)]
        # a reconciled orphan names the seq it was first acknowledged as, and media
        batch[4] = dataclasses.replace(batch[4], moved_from=7, media={"url": "u", "size": 1})
        caplog.set_level(logging.WARNING, logger="cassandra")
        await store.upsert_messages(batch)
        for conv in convs:
            want = [1, 2, 3] if conv == convs[0] else [1]
            assert [m.seq for m in await store.messages(conv, 0, 10)] == want
            assert await store.lookup_cid(conv, "alice", "c1") == (1, 0)
            assert await store.head(conv) == want[-1]
        moved = (await store.messages(convs[4], 0, 10))[0]
        assert (moved.moved_from, moved.media) == (7, {"url": "u", "size": 1})
        assert len((await store.messages(convs[0], 1, 10))[0].body) == 16_000
        # the longest ids the protocol allows, non-ASCII bodies: shared requests filled
        # to the packing bound by the estimate stay under Cassandra's 5 KiB
        long = [dataclasses.replace(_msg(f"{c}-{'v' * 100}", 1, sender="s" * 128),
                                    mid="m" * 36, cid="c" * 128, from_device="d" * 128,
                                    body="é" * 60) for c in convs]
        await store.upsert_messages(long)
        assert await store.lookup_cid(long[5].conv, "s" * 128, "c" * 128) == (1, 0)
        assert "Server warning" not in caplog.text
    finally:
        await store.close()


def _store_counts() -> dict[str, float]:
    """The store writer's counters as its /metrics serves them."""
    get = METRICS.registry.get_sample_value
    out = {what: get("msgctl_store_writes_total", {"what": what}) or 0.0
           for what in ("messages", "cids", "heads_beside", "heads_apart")}
    return out | {"requests": get("msgctl_store_requests_total") or 0.0}


async def test_the_store_writer_counts_the_partitions_and_requests_it_writes(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    """`msgctl_store_writes_total` counts each partition a batch writes, by kind, and
    `msgctl_store_requests_total` the requests that carried them (what an operator
    reads to see what a message costs Cassandra)."""
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    sent = 0
    run = store._run

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal sent
        sent += 1
        return await run(*args, **kwargs)

    store._run = counted  # type: ignore[method-assign]
    try:
        convs = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(12)]
        first = [_msg(c, 1) for c in convs] + [_msg(convs[0], 2, sender="bob")]
        before = _store_counts()
        await store.upsert_messages(first)
        gained = {k: v - before[k] for k, v in _store_counts().items()}
        # 12 conversations' first messages: their heads go apart, to conv_heads
        assert gained == {"messages": 12, "cids": 13, "heads_beside": 0, "heads_apart": 12,
                          "requests": sent}
        assert 0 < sent < 12 + 13 + 12  # small partitions share requests
        sent = 0
        before = _store_counts()
        nxt = [_msg(c, 3) for c in convs[:5]]
        assert await store.store_messages(nxt, set(convs[:5])) == set(convs[:5])
        gained = {k: v - before[k] for k, v in _store_counts().items()}
        assert gained == {"messages": 5, "cids": 5, "heads_beside": 5, "heads_apart": 0,
                          "requests": sent}
    finally:
        await store.close()


def _tombstone_cells(session: object, query: str) -> list[int]:
    """The tombstone cells Cassandra's read of `query` met, from the query's trace
    ("Read N live rows and M tombstone cells", one event per replica read)."""
    trace = session.execute(query, trace=True).get_query_trace(max_wait_sec=20)
    counts = [re.search(r"live rows and (\d+) tombstone cells", e.description)
              for e in trace.events]
    return [int(m.group(1)) for m in counts if m]


async def test_a_message_leaves_its_absent_columns_unwritten(
        session: object, cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    """A text message without media (and not moved) is stored without its media and
    moved_from cells: bound as nulls, they would be tombstone cells that each flush,
    compaction and read of the row carries. A message with both reads them back."""
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    try:
        conv = f"conv-{uuid.uuid4().hex[:8]}"
        with_both = dataclasses.replace(_msg(conv, 2), moved_from=7, media={"url": "u"})
        await store.upsert_messages([_msg(conv, 1), with_both])
        read = await store.messages(conv, 0, 10)
        assert [(m.seq, m.media, m.moved_from) for m in read] == [
            (1, None, None), (2, {"url": "u"}, 7)]
        assert _tombstone_cells(
            session, f"SELECT * FROM {cassandra_keyspace}.messages WHERE conv = '{conv}' "
                     "AND bucket = 0") == [0]
    finally:
        await store.close()


async def test_requests_leave_no_garbage_for_the_cyclic_collector(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    """Each request's driver future is freed as soon as it is answered, not left in a
    reference cycle: in the router's process those cycles made the collector pause for
    up to 170 ms at 200 msgs/s."""
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        conv = f"conv-{uuid.uuid4().hex[:8]}"
        for seq in range(1, 31):
            await store.upsert_messages([_msg(conv, seq)])
        assert len(await store.messages(conv, 0, 100)) == 30
        gc.collect()
        # Only the requests' own futures (prepared or batch statements) count: the
        # connect's blocking queries, and the test session's on the driver's shared I/O
        # thread, leave theirs to the collector once each, off the request path, and
        # that thread can let go of the last of them after the collection above.
        leaked = [type(o.query).__name__ for o in gc.garbage
                  if isinstance(o, ResponseFuture)
                  and isinstance(o.query, BoundStatement | BatchStatement)]
        assert leaked == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        await store.close()


async def test_membership_is_repaired_by_a_later_create(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    # a winner that died between its insert and its membership rows: a retry repairs them
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    try:
        conv = Conversation(f"conv-{uuid.uuid4().hex[:8]}", ("ann", "ben"), "eu", "t", 1)
        await store._run(store._bind("ins_conv", (conv.conv, list(conv.members), conv.home,
                                                  conv.title, conv.created_ts)),
                         profile="lwt")
        assert conv.conv not in await store.conversations_of("ann")
        again = Conversation(conv.conv, ("zoe",), "us", None, 2)
        assert await store.create_conversation(again) == conv
        assert conv.conv in await store.conversations_of("ann")
        assert conv.conv not in await store.conversations_of("zoe")
    finally:
        await store.close()


async def test_watermark_registers_survive_a_read_of_missing_fields(
        cassandra_endpoint: Endpoint, cassandra_keyspace: str) -> None:
    store = await cassandra_store(cassandra_endpoint, cassandra_keyspace)
    try:
        await store.set_watermark("u-only-delivered", "c", Watermark(3, 0))
        assert await store.watermark("u-only-delivered", "c") == Watermark(3, 0)
    finally:
        await store.close()
