"""Cassandra message store and state store of the cluster backend.

Implements the MessageStore and StateStore ports with the semantics of the
embedded SqliteStore (the shared contract suite in tests/contract runs
against both). In cluster mode the durable log is Kafka; `upsert_messages` is
the store writer's way in, idempotent so the writer may replay any batch.

Every request is a prepared statement at LOCAL_QUORUM (LOCAL_SERIAL for the
one lightweight transaction), routed token-aware within the local data
center, and bridged to asyncio through the driver's callbacks: nothing here
blocks the event loop except `connect`'s work, which runs in a thread.
Requests are bounded by a timeout and failures of availability surface as
`StoreUnavailable`, which callers map to the protocol's `unavailable` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Collection, Iterable, Sequence
from typing import Any, TypeVar

from cassandra import (
    ConsistencyLevel,
    CoordinationFailure,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteTimeout,
)
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import (
    UNSET_VALUE,
    BatchStatement,
    BatchType,
    PreparedStatement,
    dict_factory,
    tuple_factory,
)

from runtime.adapters.cluster import engine_auth
from runtime.adapters.cluster.cql_schema import (
    DEFAULT_BUCKET_SIZE,
    check_keyspace,
    ensure_schema,
)
from runtime.awaiting import all_of
from runtime.config import EnginesConfig
from runtime.core.homes import HomeRecord
from runtime.core.sequencing import EPOCH_SHIFT
from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS, labelled
from runtime.ports import Conversation, DeviceState, Message, PushToken
from runtime.ports import Unavailable as TryAgain

log = logging.getLogger("msgctl.store.cassandra")
T = TypeVar("T")

_LWT = "lwt"
_MSG_COLS = ("conv, seq, prev, mid, cid, sender, from_device, ts, kind, body, media, "
             "moved_from")
_HOME_COLS = "conv, epoch, home, previous, kind, base, at, fenced_last, reconciled, held"
# a message batch holds one partition's rows (Cassandra skips its batch size guard for
# those); these bound one request's size all the same
_BATCH_ROWS = 100
_BATCH_BYTES = 256 * 1024
# the small single-row writes of a store batch (cid index, heads) go this many partitions
# to a request: a request each cost the store writer more than the writes themselves, and
# Cassandra warns about unlogged batches over 10 partitions
_ROWS_PER_REQUEST = 10
# small partitions of a store batch (the messages of one conversation, a cid row) share a
# request up to this size: under Cassandra's batch_size_warn_threshold (5 KiB), which
# guards only batches of several partitions. At 200 msgs/s a batch held 1-2 messages of
# different conversations, and each request cost Cassandra more than its rows
_PACK_BYTES = 4096
# head reads of one `heads` call in flight at once: a user in 10,000 conversations must
# not take the whole `max_inflight` budget (every other request of the process waits on it)
HEADS_IN_FLIGHT = 32
# empty buckets in a row after which a history walk skips to the next epoch's first
EMPTY_RUN = 8

# errors that mean "the store cannot answer now", as opposed to a bad request
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    NoHostAvailable, OperationTimedOut, Unavailable, ReadTimeout, WriteTimeout,
    CoordinationFailure, ConnectionException,
)


class StoreUnavailable(TryAgain):
    """Cassandra could not serve the request in time (down, partitioned, overloaded);
    like any Unavailable, the client is told to retry."""


def _wrap(exc: BaseException) -> BaseException:
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        err = StoreUnavailable(f"cassandra unavailable: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err
    return exc


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if fut.done():  # cancelled by the caller meanwhile
        return
    if isinstance(result, BaseException):
        fut.set_exception(_wrap(result))
    else:
        fut.set_result(result)


def _post(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any) -> None:
    """Hand a result from the driver's I/O thread to the waiting coroutine's loop."""
    # RuntimeError: the loop is closed, nobody waits for this any more
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, fut, result)


def _row_bytes(m: Message, media: str | None) -> int:
    """A message row's size as Cassandra's batch size check counts it: 16 bytes per
    cell (10 at most: media and moved_from are left out when unset) plus each value's
    bytes, the clustering key and the row's liveness; the partition key is not counted.
    Counted as if every cell were there: an estimate over, never under."""
    values = (m.mid, m.cid, m.sender, m.from_device, m.kind, m.body, media or "")
    # prev, ts and moved_from: 8 bytes each
    return 10 * 16 + 8 + 8 + 24 + sum(len(v.encode()) for v in values)


def pack(groups: list[tuple[int, list[T]]], max_parts: int = _ROWS_PER_REQUEST,
         max_bytes: int = _PACK_BYTES) -> list[list[T]]:
    """The requests for `groups`, each one partition's (estimated size, rows): partitions
    smaller than `max_bytes` share a request (at most `max_parts` partitions and
    `max_bytes`), a larger one gets requests of its own (`_BATCH_ROWS`, `_BATCH_BYTES`
    each: a single-partition batch is applied atomically and has no size guard)."""
    out: list[list[T]] = []
    shared: list[T] = []
    parts = size = 0
    for group_size, rows in groups:
        if group_size > max_bytes or len(rows) > _BATCH_ROWS:
            per_row = group_size / max(1, len(rows))
            step = max(1, min(_BATCH_ROWS, int(_BATCH_BYTES // max(per_row, 1))))
            out += [rows[i:i + step] for i in range(0, len(rows), step)]
            continue
        if parts and (parts + 1 > max_parts or size + group_size > max_bytes
                      or len(shared) + len(rows) > _BATCH_ROWS):
            out.append(shared)
            shared, parts, size = [], 0, 0
        shared += rows
        parts += 1
        size += group_size
    if shared:
        out.append(shared)
    return out


def _bucket(seq: int, size: int) -> int:
    return seq // size


def _next_bucket(bucket: int, size: int, *, empty_run: int) -> int:
    """The bucket a walk reads after `bucket`, which closed a run of `empty_run` empty
    buckets. A conversation moved by a failover has a new epoch of seqs 2^40 above the
    old ones; past EMPTY_RUN empty buckets the walk goes on at the next epoch's first
    bucket instead of across ~10^9 empty ones (an epoch's counters are contiguous, so
    a long run of empty buckets means that epoch has ended)."""
    if empty_run >= EMPTY_RUN:
        epoch = ((bucket + 1) * size - 1) >> EPOCH_SHIFT  # the epoch of its highest seq
        return max(bucket + 1, _bucket((epoch + 1) << EPOCH_SHIFT, size))
    return bucket + 1


def _row_to_message(row: Sequence[Any]) -> Message:
    conv, seq, prev, mid, cid, sender, device, ts, kind, body, media, moved_from = row
    return Message(conv, seq, prev, mid, cid, sender, device, ts, kind, body,
                   json.loads(media) if media else None, moved_from)


def _row_to_home(row: Sequence[Any]) -> HomeRecord:
    conv, epoch, home, previous, kind, base, at, fenced_last, reconciled, held = row
    # home "" : only the old home's fence reached this data center so far (a partition
    # held the record back); it still says the conversation moved away from there
    return HomeRecord(conv, epoch, home or "", previous or "", kind or "", base, at or 0,
                      fenced_last, bool(reconciled), held or 0)


def _row_to_conversation(row: dict[str, Any]) -> Conversation:
    return Conversation(row["conv"], tuple(row["members"] or ()), row["home"], row["title"],
                        row["created_ts"] or 0)


class CassandraStore:
    """MessageStore + StateStore on Cassandra; use one per process, bound to one event loop."""

    def __init__(self, hosts: list[str], port: int = 9042, keyspace: str = "msgctl",
                 local_dc: str = "", replication: dict[str, int] | None = None,
                 consistency: str = "LOCAL_QUORUM", *, request_timeout: float = 5.0,
                 connect_timeout: float = 5.0, bucket_size: int | None = None,
                 max_inflight: int = 256, create_schema: bool = True,
                 protocol_version: int = 5, auth: dict[str, Any] | None = None) -> None:
        if not hosts:
            raise ValueError("CassandraStore needs at least one contact host")
        self.hosts = list(hosts)
        self.port = port
        self.keyspace = check_keyspace(keyspace)
        self.local_dc = local_dc
        self.replication = dict(replication or ({local_dc: 1} if local_dc else {}))
        self.consistency = ConsistencyLevel.name_to_value[consistency.upper()]
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._requested_bucket = bucket_size
        self.bucket_size = bucket_size or DEFAULT_BUCKET_SIZE
        self.max_inflight = max_inflight
        self.create_schema = create_schema
        # pinned: negotiating down from the driver's newest version costs reconnects and
        # warnings; 5 is what Cassandra 4.0+ speaks
        self.protocol_version = protocol_version
        # the login and TLS context (engine_auth.cassandra_kwargs), given to the driver
        self.auth = dict(auth or {})
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._ps: dict[str, PreparedStatement] = {}
        self._inflight: asyncio.Semaphore | None = None
        # heads beside their messages (`store_messages`): only with one replica per row in
        # this data center, read from the keyspace at connect
        self.heads_beside = False
        # whether `message_cids`, the cid index before migration 5, holds rows: read at
        # connect; nothing writes it any more, so once empty it stays empty
        self.old_cids = False

    @classmethod
    def from_config(cls, engines: EnginesConfig, **kwargs: Any) -> CassandraStore:
        kwargs.setdefault("auth", engine_auth.cassandra_kwargs(engines))
        return cls(engines.cassandra_hosts, engines.cassandra_port, engines.keyspace,
                   engines.cassandra_dc, engines.replication, **kwargs)

    # -- lifecycle --------------------------------------------------------
    async def connect(self) -> None:
        """Connect, create or migrate the schema, prepare the statements.

        Raises StoreUnavailable when no host answers within the connect timeout.
        """
        self._inflight = asyncio.Semaphore(self.max_inflight)
        loop = asyncio.get_running_loop()
        # the driver bounds each contact attempt itself; this bounds the whole, schema included
        budget = self.connect_timeout * (len(self.hosts) + 1) + 60
        abandoned = threading.Event()
        task = loop.run_in_executor(None, self._connect_blocking, abandoned)
        try:
            await asyncio.wait_for(task, budget)
        except TimeoutError as exc:
            abandoned.set()  # the thread cannot be stopped; it drops a late connection
            raise StoreUnavailable(f"cassandra at {self._where()}: connect took over "
                                   f"{budget:.0f}s") from exc
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"cassandra at {self._where()} unreachable: {exc}") from exc

    def _where(self) -> str:
        return ",".join(f"{h}:{self.port}" for h in self.hosts)

    def _connect_blocking(self, abandoned: threading.Event) -> None:
        routing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.local_dc or None))
        default = ExecutionProfile(
            load_balancing_policy=routing, consistency_level=self.consistency,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=self.request_timeout, row_factory=tuple_factory)
        # LWT results carry `[applied]` and the stored row: read them by name
        lwt = ExecutionProfile(
            load_balancing_policy=routing, consistency_level=self.consistency,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=self.request_timeout, row_factory=dict_factory)
        cluster = Cluster(
            self.hosts, port=self.port, protocol_version=self.protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: default, _LWT: lwt},
            connect_timeout=self.connect_timeout,
            control_connection_timeout=self.connect_timeout,
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0),
            idle_heartbeat_interval=10, idle_heartbeat_timeout=self.request_timeout,
            **self.auth)
        try:
            session = cluster.connect()
            if self.create_schema:
                if not self.replication:
                    raise ValueError("CassandraStore: replication (or local_dc) is needed to "
                                     "create the keyspace")
                ensure_schema(session, self.keyspace, self.replication)
            self._session = session
            self._cluster = cluster
            self._prepare(session)
            self.heads_beside = self._one_local_replica(cluster)
            self.old_cids = session.execute(
                f"SELECT cid FROM {self.keyspace}.message_cids LIMIT 1").one() is not None
            self._settle_bucket_size(session)
            if abandoned.is_set():
                raise StoreUnavailable("connect finished after its caller gave up")
        except BaseException:
            self._session = None
            self._cluster = None
            cluster.shutdown()
            raise

    def _one_local_replica(self, cluster: Cluster) -> bool:
        """Whether the keyspace keeps one replica of each row in this data center.

        A static head written beside its messages is one mutation, but with several
        replicas a write that failed after reaching one of them can show a quorum read
        the head (read repair copies what the read returned) while another quorum still
        misses a message under it; `conv_heads`, written only after the messages' write
        succeeded, has no such window. Unknown counts as several.
        """
        meta = cluster.metadata.keyspaces.get(self.keyspace)
        if meta is None and hasattr(cluster, "refresh_keyspace_metadata"):
            # created by this connect: the driver may not have loaded it yet
            with contextlib.suppress(Exception):
                cluster.refresh_keyspace_metadata(self.keyspace)
            meta = cluster.metadata.keyspaces.get(self.keyspace)
        strategy = getattr(meta, "replication_strategy", None)
        factors = getattr(strategy, "dc_replication_factors", None)
        if isinstance(factors, dict):
            return bool(self.local_dc) and factors.get(self.local_dc) == 1
        return getattr(strategy, "replication_factor", None) == 1

    def _settle_bucket_size(self, session: Session) -> None:
        ks = self.keyspace
        row = session.execute(
            f"INSERT INTO {ks}.store_settings (name, value) VALUES ('bucket_size', %s) "
            "IF NOT EXISTS", (str(self.bucket_size),), execution_profile=_LWT).one()
        stored = int(row["value"]) if not row["[applied]"] else self.bucket_size
        if self._requested_bucket is not None and stored != self._requested_bucket:
            raise ValueError(f"keyspace {ks} was created with bucket size {stored}, "
                             f"not {self._requested_bucket}")
        self.bucket_size = stored

    def _prepare(self, session: Session) -> None:
        ks = self.keyspace
        queries = {
            "ins_conv": f"INSERT INTO {ks}.conversations (conv, members, home, title, "
                        "created_ts) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
            "sel_conv": f"SELECT conv, members, home, title, created_ts FROM {ks}.conversations "
                        "WHERE conv = ?",
            "ins_member": f"INSERT INTO {ks}.user_conversations (user, conv) VALUES (?, ?)",
            "sel_convs_of": f"SELECT conv FROM {ks}.user_conversations WHERE user = ?",
            "sel_head": f"SELECT head FROM {ks}.conv_heads WHERE conv = ?",
            "set_head": f"INSERT INTO {ks}.conv_heads (conv, head) VALUES (?, ?) "
                        "USING TIMESTAMP ?",
            # the head beside the messages (migration 4): a static column, so it joins
            # the messages' own mutation when it goes in their partition's request
            "set_bucket_head": f"UPDATE {ks}.messages USING TIMESTAMP ? SET head = ? "
                               "WHERE conv = ? AND bucket = ?",
            "sel_bucket_head": f"SELECT head FROM {ks}.messages WHERE conv = ? AND bucket = ? "
                               "LIMIT 1",
            "ins_msg": f"INSERT INTO {ks}.messages (bucket, {_MSG_COLS}) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            "del_msg": f"DELETE FROM {ks}.messages WHERE conv = ? AND bucket = ? AND seq = ?",
            "sel_home": f"SELECT {_HOME_COLS} FROM {ks}.conv_homes WHERE conv = ? LIMIT 1",
            "sel_homes": f"SELECT {_HOME_COLS} FROM {ks}.conv_homes WHERE conv = ?",
            "ins_home": f"INSERT INTO {ks}.conv_homes ({_HOME_COLS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            "set_base": f"UPDATE {ks}.conv_homes SET base = ? WHERE conv = ? AND epoch = ?",
            "set_fenced": f"UPDATE {ks}.conv_homes SET fenced_last = ? WHERE conv = ? "
                          "AND epoch = ?",
            "set_reconciled": f"UPDATE {ks}.conv_homes SET reconciled = true WHERE conv = ? "
                              "AND epoch = ?",
            "ins_moved": f"INSERT INTO {ks}.moved_to (home, conv, epoch) VALUES (?, ?, ?)",
            "sel_moved": f"SELECT conv, epoch FROM {ks}.moved_to WHERE home = ?",
            "del_moved": f"DELETE FROM {ks}.moved_to WHERE home = ? AND conv = ?",
            "sel_all_convs": f"SELECT conv, home FROM {ks}.conversations",
            "sel_msgs": f"SELECT {_MSG_COLS} FROM {ks}.messages WHERE conv = ? AND bucket = ? "
                        "AND seq > ? ORDER BY seq ASC LIMIT ?",
            "sel_msg": f"SELECT {_MSG_COLS} FROM {ks}.messages WHERE conv = ? AND bucket = ? "
                       "AND seq = ?",
            "ins_cid": f"INSERT INTO {ks}.sender_cids (conv, sender, cid, seq, prev) "
                       "VALUES (?, ?, ?, ?, ?)",
            "sel_cid": f"SELECT seq, prev FROM {ks}.sender_cids WHERE conv = ? AND sender = ? "
                       "AND cid = ?",
            # the cid index before migration 5
            "sel_old_cid": f"SELECT seq, prev FROM {ks}.message_cids WHERE conv = ? "
                           "AND sender = ? AND cid = ?",
            "sel_device": f"SELECT known, conv, acked FROM {ks}.device_cursors "
                          "WHERE user = ? AND device = ?",
            "ins_device": f"INSERT INTO {ks}.device_cursors (user, device, known, first_seen) "
                          "VALUES (?, ?, true, ?)",
            "set_cursor": f"INSERT INTO {ks}.device_cursors (user, device, conv, acked) "
                          "VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            "sel_mark": f"SELECT delivered, read FROM {ks}.watermarks WHERE user = ? AND conv = ?",
            "set_delivered": f"INSERT INTO {ks}.watermarks (user, conv, delivered) "
                             "VALUES (?, ?, ?) USING TIMESTAMP ?",
            "set_read": f"INSERT INTO {ks}.watermarks (user, conv, read) VALUES (?, ?, ?) "
                        "USING TIMESTAMP ?",
            "ins_token": f"INSERT INTO {ks}.push_tokens (user, device, platform, push_token) "
                         "VALUES (?, ?, ?, ?)",
            "sel_tokens": f"SELECT user, device, platform, push_token FROM {ks}.push_tokens "
                          "WHERE user = ?",
            "del_token": f"DELETE FROM {ks}.push_tokens WHERE user = ? AND device = ?",
            "sel_token": f"SELECT push_token, WRITETIME(push_token) FROM {ks}.push_tokens "
                         "WHERE user = ? AND device = ?",
            "del_token_at": f"DELETE FROM {ks}.push_tokens USING TIMESTAMP ? WHERE user = ? "
                            "AND device = ?",
            # through the index push_tokens_by_token (migration 2)
            "sel_token_holders": f"SELECT user, device, WRITETIME(push_token) FROM "
                                 f"{ks}.push_tokens WHERE push_token = ?",
        }
        self._ps = {name: session.prepare(q) for name, q in queries.items()}

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)

    # -- the asyncio bridge -----------------------------------------------
    async def _run(self, statement: Any, params: Any = None, profile: Any = None) -> list[Any]:
        """Execute one statement; all pages' rows. Bounded in flight and in time."""
        session = self._session
        if session is None or self._inflight is None:
            raise StoreUnavailable("cassandra store is not connected")
        async with self._inflight:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[list[Any]] = loop.create_future()
            rows: list[Any] = []
            try:
                rf: ResponseFuture = session.execute_async(
                    statement, params, timeout=self.request_timeout,
                    execution_profile=profile or EXEC_PROFILE_DEFAULT)
            except Exception as exc:  # e.g. the session was shut down underneath
                raise _wrap(exc) from exc

            # both callbacks run on the driver's I/O thread
            def on_page(page: Iterable[Any] | None) -> None:
                try:
                    rows.extend(page or ())  # writes have no rows
                    if rf.has_more_pages:
                        rf.start_fetching_next_page()
                        return
                except Exception as exc:  # unsettled, the caller would wait forever
                    _post(loop, fut, exc)
                    return
                _post(loop, fut, rows)

            def on_error(exc: BaseException) -> None:
                _post(loop, fut, exc)

            rf.add_callbacks(on_page, on_error)
            try:
                return await fut
            finally:
                # Two reference cycles per request, each freed only by the cyclic
                # collector with all the future holds (statement, rows, events): rf ->
                # its callbacks -> these closures -> rf, and rf -> its timeout timer ->
                # rf._on_timeout -> rf. In the router's process at 200 msgs/s they were
                # 90% of what each collection freed, in pauses of up to 170 ms.
                rf.clear_callbacks()
                if fut.done() and not fut.cancelled() and hasattr(rf, "_timer"):
                    # the driver cancelled it before it answered; a request still in
                    # flight (this task was cancelled) keeps its timer, which frees
                    # its stream id if no answer ever comes
                    rf._timer = None

    def _bind(self, name: str, params: Sequence[Any]) -> Any:
        if self._session is None:
            raise StoreUnavailable("cassandra store is not connected")
        return self._ps[name].bind(params)

    async def _all(self, requests: Iterable[Awaitable[Any]]) -> list[Any]:
        """Await every request (none is left running), then raise the first failure."""
        return await all_of(requests)

    # -- store writer -----------------------------------------------------
    async def upsert_messages(self, messages: list[Message]) -> None:
        """Write messages, their cid index and the heads; replaying a batch changes nothing.

        Heads are written only after every message of the batch is stored, so a head never
        points past what a reader can fetch.
        """
        await self.store_messages(messages)
        await self.set_heads(messages)

    async def store_messages(self, messages: list[Message],
                             heads: Collection[str] = ()) -> set[str]:
        """The messages and their cid index. Idempotent.

        The heads of the conversations in `heads` (the caller knows every earlier message
        of theirs is stored) go into the same mutation as the messages, as their newest
        bucket's static head, where that is atomic and findable: the batch continues a
        conversation (`prev` > 0) in the bucket of its previous head, which `conv_heads`
        points into by the time anything of this batch is routed (batches are routed in
        order, each after its own heads), the partition's rows fit one request, and
        the data center keeps one replica of each row (`heads_beside`). Returns those
        conversations; every other head is the caller's to write with
        `set_heads`, once these and every earlier batch's messages are stored.
        """
        if not messages:
            return set()
        # each partition: (estimated bytes, its rows as (statement, values))
        partitions: dict[tuple[str, int], tuple[list[int], list[tuple[str, tuple[Any, ...]]]]] \
            = {}
        # each (conv, sender) partition of the cid index: the same
        cids: dict[tuple[str, str], tuple[list[int], list[tuple[str, tuple[Any, ...]]]]] = {}
        # conv -> (its highest seq here, the lowest prev here)
        span: dict[str, tuple[int, int]] = {}
        for m in messages:
            top, low = span.get(m.conv, (m.seq, m.prev))
            span[m.conv] = (max(top, m.seq), min(low, m.prev))
            bucket = _bucket(m.seq, self.bucket_size)
            size, rows = partitions.setdefault((m.conv, bucket), ([0], []))
            media = json.dumps(m.media) if m.media is not None else None
            # an absent column is left unset, not bound as null: a null is a tombstone
            # cell, which every flush, compaction and read of the row then carries (two
            # of a text message's ten cells). A (conv, seq) row only ever holds one
            # message (a new epoch's seqs sort above the old ones'), so nothing is there
            # for a null to clear
            rows.append(("ins_msg", (bucket, m.conv, m.seq, m.prev, m.mid, m.cid, m.sender,
                                     m.from_device, m.ts, m.kind, m.body,
                                     UNSET_VALUE if media is None else media,
                                     UNSET_VALUE if m.moved_from is None else m.moved_from)))
            size[0] += _row_bytes(m, media)
            size, rows = cids.setdefault((m.conv, m.sender), ([0], []))
            rows.append(("ins_cid", (m.conv, m.sender, m.cid, m.seq, m.prev)))
            size[0] += len(m.cid) + 64
        inline: set[str] = set()
        for conv in heads if self.heads_beside else ():
            if conv not in span:
                continue
            top, low = span[conv]
            bucket = _bucket(top, self.bucket_size)
            if low == 0 or _bucket(low, self.bucket_size) != bucket:
                # its first messages, or it enters a bucket: conv_heads must point there
                # first (a conversation without a conv_heads row has no messages: `head`
                # reads one row for it)
                continue
            size, rows = partitions[(conv, bucket)]
            if size[0] + 64 > _PACK_BYTES or len(rows) + 1 > _BATCH_ROWS:
                continue  # `pack` would split the partition over requests: not atomic
            rows.append(("set_bucket_head", (top, top, conv, bucket)))
            size[0] += 64
            inline.add(conv)
        groups = [(size[0], rows) for size, rows in (*partitions.values(), *cids.values())]
        requests = pack(groups)
        labelled(METRICS.store_writes, "messages").inc(len(partitions))
        labelled(METRICS.store_writes, "cids").inc(len(cids))
        labelled(METRICS.store_writes, "heads_beside").inc(len(inline))
        METRICS.store_requests.inc(len(requests))
        await self._all(self._run(self._request(rows)) for rows in requests)
        return inline

    async def set_heads(self, messages: list[Message]) -> None:
        """Each conversation's head to the highest seq of `messages` (a head only grows: it
        is written at the timestamp of its value)."""
        heads: dict[str, int] = {}
        for m in messages:
            heads[m.conv] = max(heads.get(m.conv, 0), m.seq)
        writes = self._rows("set_head", [(conv, head, head) for conv, head in heads.items()])
        labelled(METRICS.store_writes, "heads_apart").inc(len(heads))
        METRICS.store_requests.inc(len(writes))
        await self._all(writes)

    def _request(self, rows: list[tuple[str, tuple[Any, ...]]]) -> Any:
        """One statement, or an unlogged batch of several."""
        if len(rows) == 1:
            return self._bind(*rows[0])
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for name, values in rows:
            batch.add(self._ps[name], values)
        return batch

    def _rows(self, name: str, rows: list[tuple[Any, ...]]) -> list[Awaitable[Any]]:
        """One-row writes of statement `name`, `_ROWS_PER_REQUEST` to a request (a lone
        row goes as itself, not as a batch of one)."""
        out: list[Awaitable[Any]] = []
        for i in range(0, len(rows), _ROWS_PER_REQUEST):
            chunk = rows[i:i + _ROWS_PER_REQUEST]
            if len(chunk) == 1:
                out.append(self._run(self._bind(name, chunk[0])))
                continue
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for row in chunk:
                batch.add(self._ps[name], row)
            out.append(self._run(batch))
        return out

    # -- message store ----------------------------------------------------
    async def create_conversation(self, conv: Conversation) -> Conversation:
        """Store `conv` unless the id exists; either way, return what is stored (first wins)."""
        rows = await self._run(self._bind("ins_conv", (
            conv.conv, list(conv.members), conv.home, conv.title, conv.created_ts)), profile=_LWT)
        stored = conv if rows[0]["[applied]"] else _row_to_conversation(rows[0])
        # also by the losers of a race: the membership rows get written even if the
        # winner died between its insert and these
        await self._all(self._run(self._bind("ins_member", (user, stored.conv)))
                        for user in dict.fromkeys(stored.members))
        return stored

    async def get_conversation(self, conv: str) -> Conversation | None:
        rows = await self._run(self._bind("sel_conv", (conv,)))
        if not rows and len(self.replication) > 1:
            # created in another region a moment ago and not replicated here yet: ask a
            # majority of all data centers (one of them wrote it) before saying "none"
            wide = self._bind("sel_conv", (conv,))
            wide.consistency_level = ConsistencyLevel.QUORUM
            with contextlib.suppress(StoreUnavailable):
                rows = await self._run(wide)
        if not rows:
            return None
        conv_id, members, home, title, created_ts = rows[0]
        return Conversation(conv_id, tuple(members or ()), home, title, created_ts or 0)

    async def conversations_of(self, user: str) -> list[str]:
        return [row[0] for row in await self._run(self._bind("sel_convs_of", (user,)))]

    async def head(self, conv: str) -> int:
        """`conv_heads`, or the static head of the bucket it points into when higher."""
        rows = await self._run(self._bind("sel_head", (conv,)))
        if not rows or rows[0][0] is None:
            return 0  # a conversation's first batch writes conv_heads, never a static head
        head = rows[0][0]
        rows = await self._run(self._bind("sel_bucket_head",
                                          (conv, _bucket(head, self.bucket_size))))
        return max(head, rows[0][0]) if rows and rows[0][0] is not None else head

    async def heads(self, convs: list[str]) -> dict[str, int]:
        """The head of each of `convs` (`head`: one or two single-partition reads),
        HEADS_IN_FLIGHT conversations at a time.

        Not one `IN (...)` query: that makes one coordinator fan out to every replica
        set of the list and wait for the slowest, and it fails as a whole. A failure
        stops the workers taking more and is raised once they are done.
        """
        pending = iter(dict.fromkeys(convs))
        out: dict[str, int] = {}
        failed = False

        async def worker() -> None:
            nonlocal failed
            for conv in pending:  # one iterator shared by the workers: each conv once
                if failed:
                    return
                try:
                    out[conv] = await self.head(conv)
                except BaseException:
                    failed = True
                    raise

        await self._all(worker() for _ in range(min(HEADS_IN_FLIGHT, len(convs))))
        return out

    async def messages(self, conv: str, after: int, limit: int) -> list[Message]:
        """Messages with seq > after, ascending, at most `limit`, walking the buckets."""
        out: list[Message] = []
        if limit <= 0:
            return out
        after = max(after, 0)
        bucket = _bucket(after + 1, self.bucket_size)
        last_bucket: int | None = None  # read only when the walk leaves the first bucket
        empty_run = 0
        while len(out) < limit:
            rows = await self._run(self._bind("sel_msgs", (conv, bucket, after,
                                                           limit - len(out))))
            out.extend(_row_to_message(r) for r in rows)
            if len(out) >= limit:
                break
            if last_bucket is None:
                last_bucket = _bucket(await self.head(conv), self.bucket_size)
            if bucket >= last_bucket:
                break
            empty_run = 0 if rows else empty_run + 1
            bucket = _next_bucket(bucket, self.bucket_size, empty_run=empty_run)
        return out

    async def message(self, conv: str, seq: int) -> Message | None:
        rows = await self._run(self._bind("sel_msg", (conv, _bucket(seq, self.bucket_size),
                                                      seq)))
        return _row_to_message(rows[0]) if rows else None

    async def lookup_cid(self, conv: str, sender: str, cid: str) -> tuple[int, int] | None:
        """The (seq, prev) stored for a send's cid; the index of before migration 5 is
        asked too while it holds any row."""
        rows = await self._run(self._bind("sel_cid", (conv, sender, cid)))
        if not rows and self.old_cids:
            rows = await self._run(self._bind("sel_old_cid", (conv, sender, cid)))
        return (rows[0][0], rows[0][1]) if rows else None

    # -- homes and epochs (region failover, runtime.core.homes) -----------
    async def home_record(self, conv: str) -> HomeRecord | None:
        """The conversation's newest epoch record; None while it never moved."""
        rows = await self._run(self._bind("sel_home", (conv,)))
        return _row_to_home(rows[0]) if rows else None

    async def home_records(self, conv: str) -> list[HomeRecord]:
        """Every epoch record of `conv`, newest first."""
        return [_row_to_home(r) for r in await self._run(self._bind("sel_homes", (conv,)))]

    async def put_home(self, record: HomeRecord) -> HomeRecord | None:
        """Insert `record` unless its epoch exists (compare-and-set in the local data
        center: during a partition the operator's failover is the authority); None when
        applied, else the record that holds the epoch."""
        rows = await self._run(self._bind("ins_home", (
            record.conv, record.epoch, record.home, record.previous, record.kind, record.base,
            record.at, record.fenced_last, record.reconciled, record.held)), profile=_LWT)
        if rows[0]["[applied]"]:
            await self._run(self._bind("ins_moved", (record.home, record.conv, record.epoch)))
            return None
        return await self.home_record(record.conv)

    async def set_home_base(self, conv: str, epoch: int, base: int) -> None:
        await self._run(self._bind("set_base", (base, conv, epoch)))

    async def set_fenced(self, conv: str, epoch: int, last: int) -> None:
        await self._run(self._bind("set_fenced", (last, conv, epoch)))

    async def set_reconciled(self, conv: str, epoch: int) -> None:
        await self._run(self._bind("set_reconciled", (conv, epoch)))

    async def moved_to(self, home: str) -> dict[str, int]:
        """Conversations moved to `home` (conv -> the epoch that moved it there)."""
        return {c: e for c, e in await self._run(self._bind("sel_moved", (home,)))}

    async def forget_moved(self, home: str, conv: str) -> None:
        await self._run(self._bind("del_moved", (home, conv)))

    async def all_conversations(self) -> list[tuple[str, str]]:
        """(conv, home at creation) of every conversation: a full scan, for the operator's
        `region failover --conversations all` and `region status`."""
        return [(c, h) for c, h in await self._run(self._bind("sel_all_convs", ()))]

    async def delete_messages(self, conv: str, seqs: list[int]) -> None:
        """Remove orphans once reconciled (a delete at wall-clock time shadows their
        writes, replayed or late, which carry the old home's earlier timestamps)."""
        await self._all(self._run(self._bind("del_msg", (conv, _bucket(s, self.bucket_size),
                                                         s))) for s in seqs)

    # -- state store ------------------------------------------------------
    async def device_state(self, user: str, device: str) -> DeviceState:
        rows = await self._run(self._bind("sel_device", (user, device)))
        known = any(bool(r[0]) for r in rows)
        # a partition with only its static row yields one row whose conv is null
        cursors = {r[1]: r[2] for r in rows if r[1] is not None and r[2] is not None}
        return DeviceState(known, cursors)

    async def register_device(self, user: str, device: str, baseline: dict[str, int]) -> None:
        """Mark the device known with `baseline` cursors; existing cursors are kept."""
        state = await self.device_state(user, device)
        await self._all(self._run(self._bind("set_cursor", (user, device, conv, s, max(s, 0))))
                        for conv, s in baseline.items() if conv not in state.cursors)
        # known last: a device that failed half-way registers again instead of being
        # known without its baseline
        if not state.known:
            await self._run(self._bind("ins_device", (user, device, int(time.time()))))

    async def set_cursor(self, user: str, device: str, conv: str, acked: int) -> None:
        # the value is the write timestamp: an older ack, replayed or late, loses
        await self._run(self._bind("set_cursor", (user, device, conv, acked, max(acked, 0))))

    async def watermark(self, user: str, conv: str) -> Watermark:
        rows = await self._run(self._bind("sel_mark", (user, conv)))
        if not rows:
            return Watermark()
        return Watermark(rows[0][0] or 0, rows[0][1] or 0)

    async def set_watermark(self, user: str, conv: str, mark: Watermark) -> None:
        # one partition, so the batch is applied atomically; each register keeps its max
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(self._ps["set_delivered"], (user, conv, mark.delivered, max(mark.delivered, 0)))
        batch.add(self._ps["set_read"], (user, conv, mark.read, max(mark.read, 0)))
        await self._run(batch)

    async def set_push_token(self, token: PushToken) -> None:
        """This device's token; taken from any other device or account that had it.

        A token addresses one installed app: the account that registered it last (a new
        login on the phone) is the one whose notifications go there, no one else's.
        """
        # the others' rows go first: a failure half-way leaves the token with nobody (the
        # client is told to retry), never with the previous account too. Each is deleted
        # at the write time it was read with, so a holder that registered it again since
        # (a later registration) keeps it, as last-write-wins would have it.
        holders = await self._run(self._bind("sel_token_holders", (token.token,)))
        await self._all(self._run(self._bind("del_token_at", (written, user, device)))
                        for user, device, written in holders
                        if (user, device) != (token.user, token.device))
        await self._run(self._bind("ins_token", (token.user, token.device, token.platform,
                                                 token.token)))

    async def push_tokens(self, users: list[str]) -> list[PushToken]:
        per_user = await self._all(self._run(self._bind("sel_tokens", (u,)))
                                   for u in dict.fromkeys(users))
        return [PushToken(*row) for rows in per_user for row in rows]

    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        if token is not None:
            # read, compare, delete at the write time of what was read: a token registered
            # again meanwhile has a later timestamp and survives the delete (no LWT, which
            # would mix Paxos with the plain upserts)
            rows = await self._run(self._bind("sel_token", (user, device)))
            if not rows or rows[0][0] != token:
                return
            await self._run(self._bind("del_token_at", (rows[0][1], user, device)))
            return
        await self._run(self._bind("del_token", (user, device)))
