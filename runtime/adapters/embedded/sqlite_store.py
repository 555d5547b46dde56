"""SQLite (WAL) message store, state store and event log of the embedded backend.

One file per region. Writes go through one writer thread that commits in
groups: every operation queued while the previous commit ran lands in the
next transaction, so one fsync serves many sends and acks. Each operation
runs in its own savepoint, so one bad operation fails alone.

A read never holds the event loop for long: a large one (the 10,000 cursors
or heads of a user in that many conversations) would otherwise stall every
session of the process. Each read is first tried on the loop's thread with a
budget of SQLite steps (a point read, a short list: no thread hop, the common
case stays as fast as it was); one that needs more is abandoned there and run
whole in a small pool of reader threads, each with a read-only connection of
its own, so its result is still that of one statement. WAL lets readers run
side by side and alongside the writer, and every read statement starts a fresh
snapshot, so a read issued after a write was acknowledged sees it (the writer
replies only after its commit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from runtime.core.watermarks import Watermark
from runtime.ports import Conversation, DeviceState, Message, PushToken

log = logging.getLogger("msgctl.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations(
    conv TEXT PRIMARY KEY, members TEXT NOT NULL, home TEXT NOT NULL, title TEXT,
    created_ts INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members(
    user TEXT NOT NULL, conv TEXT NOT NULL, PRIMARY KEY(user, conv)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages(
    conv TEXT NOT NULL, seq INTEGER NOT NULL, prev INTEGER NOT NULL, mid TEXT NOT NULL,
    cid TEXT NOT NULL, sender TEXT NOT NULL, from_device TEXT NOT NULL, ts INTEGER NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL, media TEXT,
    PRIMARY KEY(conv, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_cid ON messages(conv, sender, cid);
CREATE TABLE IF NOT EXISTS devices(
    user TEXT NOT NULL, device TEXT NOT NULL, first_seen INTEGER NOT NULL,
    PRIMARY KEY(user, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors(
    user TEXT NOT NULL, device TEXT NOT NULL, conv TEXT NOT NULL, acked INTEGER NOT NULL,
    PRIMARY KEY(user, device, conv)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks(
    conv TEXT NOT NULL, user TEXT NOT NULL, delivered INTEGER NOT NULL, read INTEGER NOT NULL,
    PRIMARY KEY(conv, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS push_tokens(
    user TEXT NOT NULL, device TEXT NOT NULL, platform TEXT NOT NULL, token TEXT NOT NULL,
    PRIMARY KEY(user, device)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS push_tokens_by_token ON push_tokens(token);
"""
SCHEMA_VERSION = "1"
_MSG_COLS = "conv, seq, prev, mid, cid, sender, from_device, ts, kind, body, media"
_MAX_GROUP = 1024
# reader threads (and connections): few, as the rows they make need the GIL, which the
# event loop then waits for; two keep one large read from holding up every other one
READERS = 2
# conversations per `heads` query: far below SQLite's limit on host parameters, and
# short enough that reads of other sessions queued behind it in the pool wait little
HEADS_CHUNK = 500
# SQLite VM steps a read may take on the event loop's thread: a point read takes tens,
# a list ~5 a row, so up to a few hundred rows (well under a millisecond) stay there;
# past it the read is interrupted and goes to a reader thread
INLINE_STEPS = 2000
_STEP_CHECK = 200  # steps between two calls of the progress handler that counts them

Op = Callable[[sqlite3.Connection], Any]
T = TypeVar("T")


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the writer reports it, which `sent` relies on
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """All rows of one statement. The cursor is closed at once: a statement left
    unfinished keeps its read transaction, and with it an old snapshot, open."""
    cur = conn.execute(sql, params)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _heads_sql(n: int) -> str:
    # a correlated max() per conversation is one primary-key seek each; `IN (...) GROUP
    # BY conv` would scan every message of every conversation asked about
    values = ",".join(["(?)"] * n)
    return (f"WITH want(conv) AS (VALUES {values}) SELECT conv, "
            "(SELECT max(seq) FROM messages m WHERE m.conv = want.conv) FROM want")


def _row_to_message(row: tuple[Any, ...]) -> Message:
    conv, seq, prev, mid, cid, sender, device, ts, kind, body, media = row
    return Message(conv, seq, prev, mid, cid, sender, device, ts, kind, body,
                   json.loads(media) if media else None)


class SqliteStore:
    def __init__(self, path: Path, *, readers: int = READERS,
                 inline_steps: int = INLINE_STEPS) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        init = _connect(path)
        init.executescript(SCHEMA)
        init.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        # every message asks for its members' tokens: keep them in memory, written through
        self._tokens: dict[str, dict[str, PushToken]] = {}
        self._holders: dict[str, set[tuple[str, str]]] = {}  # token -> (user, device)s
        for row in _fetch(init, "SELECT user, device, platform, token FROM push_tokens", ()):
            self._cache_token(PushToken(*row))
        init.close()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-read")
        self._reader = threading.local()  # each reader thread's connection
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        # the loop thread's connection; it never waits for a lock (timeout 0): a read
        # that finds one goes to a reader thread, whose connection may wait
        self._inline: sqlite3.Connection | None = None
        self._inline_steps = inline_steps
        self._inline_calls = 0
        if inline_steps > 0:
            self._inline = _connect(path, readonly=True)
            self._inline.execute("PRAGMA busy_timeout=0")
            self._inline.set_progress_handler(self._over_budget, _STEP_CHECK)
        self._queue: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._writer, name="sqlite-writer", daemon=True)
        self._thread.start()
        self.commits = 0

    # -- writer -----------------------------------------------------------
    def _writer(self) -> None:
        conn = _connect(self.path)
        while True:
            item = self._queue.get()
            if item is None:
                break
            group = [item]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            results = self._commit_group(conn, group)
            for (_, fut), result in zip(group, results, strict=True):
                fut.get_loop().call_soon_threadsafe(_settle, fut, result)
            if stop:
                break
        conn.close()

    def _commit_group(self, conn: sqlite3.Connection,
                      group: list[tuple[Op, asyncio.Future[Any]]]) -> list[Any]:
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _ in group:
                conn.execute("SAVEPOINT op")
                try:
                    results.append(op(conn))
                    conn.execute("RELEASE op")
                except Exception as exc:  # one bad operation must not sink the group
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append(exc)
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [exc] * len(group)
        return results

    def _submit(self, op: Op) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        self._queue.put((op, fut))
        return fut

    async def write(self, op: Op) -> Any:
        return await self._submit(op)

    def write_nowait(self, op: Op) -> asyncio.Future[Any]:
        """Queue a write without waiting for it (acks, receipts); failures are logged."""
        fut = self._submit(op)
        fut.add_done_callback(_log_failure)
        return fut

    async def close(self) -> None:
        self._queue.put(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._thread.join, 10)
        await loop.run_in_executor(None, self._readers.shutdown, True)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        if self._inline is not None:
            conns.append(self._inline)
            self._inline = None
        for conn in conns:
            conn.close()

    # -- readers ----------------------------------------------------------
    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader, "conn", None)
        if conn is None:
            conn = self._reader.conn = _connect(self.path, readonly=True)
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def _over_budget(self) -> int:
        self._inline_calls += 1
        return int(self._inline_calls * _STEP_CHECK > self._inline_steps)

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = True) -> T:
        """`fn(connection)`, which must only read (and may run more than once).

        Tried on the event loop's thread first, within INLINE_STEPS; a read that needs
        more is interrupted there and run whole on a reader thread. `inline=False`, for
        a read known to be large (or one that waits on anything but SQLite): straight
        to a reader thread.
        """
        if inline and self._inline is not None:
            self._inline_calls = 0  # fn runs to its end with no await: the count is its own
            try:
                return fn(self._inline)
            except sqlite3.OperationalError:
                # over the budget ("interrupted"), or the file locked just now: a reader
                # thread does it all again, and raises what a real failure raises
                pass
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader_conn()))

    async def _rows(self, sql: str, params: Sequence[Any], *, inline: bool = True
                    ) -> list[Any]:
        return await self.read(lambda conn: _fetch(conn, sql, params), inline=inline)

    # -- event log: append ------------------------------------------------
    async def append(self, messages: list[Message]) -> None:
        rows = [(m.conv, m.seq, m.prev, m.mid, m.cid, m.sender, m.from_device, m.ts, m.kind,
                 m.body, json.dumps(m.media) if m.media is not None else None) for m in messages]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(f"INSERT INTO messages ({_MSG_COLS}) VALUES "
                             "(?,?,?,?,?,?,?,?,?,?,?)", rows)
        await self.write(op)

    # -- message store ----------------------------------------------------
    async def create_conversation(self, conv: Conversation) -> Conversation:
        def op(conn: sqlite3.Connection) -> Conversation:
            row = conn.execute("SELECT conv, members, home, title, created_ts FROM conversations "
                               "WHERE conv=?", (conv.conv,)).fetchone()
            if row is not None:
                return _conv_from_row(row)
            conn.execute("INSERT INTO conversations VALUES (?,?,?,?,?)",
                         (conv.conv, json.dumps(list(conv.members)), conv.home, conv.title,
                          conv.created_ts))
            conn.executemany("INSERT OR IGNORE INTO members VALUES (?,?)",
                             [(u, conv.conv) for u in conv.members])
            return conv
        return await self.write(op)

    async def get_conversation(self, conv: str) -> Conversation | None:
        rows = await self._rows("SELECT conv, members, home, title, created_ts FROM "
                                "conversations WHERE conv=?", (conv,))
        return _conv_from_row(rows[0]) if rows else None

    async def conversations_of(self, user: str) -> list[str]:
        return await self.read(lambda conn: [r[0] for r in _fetch(
            conn, "SELECT conv FROM members WHERE user=?", (user,))])

    async def head(self, conv: str) -> int:
        rows = await self._rows("SELECT max(seq) FROM messages WHERE conv=?", (conv,))
        return rows[0][0] or 0

    async def heads(self, convs: list[str]) -> dict[str, int]:
        """The head of each of `convs`: one query per HEADS_CHUNK of them. A long chunk
        is a job of its own in the reader pool, so other sessions' reads run in between."""
        unique = list(dict.fromkeys(convs))
        out: dict[str, int] = {}
        for i in range(0, len(unique), HEADS_CHUNK):
            chunk = unique[i:i + HEADS_CHUNK]
            # ~25 steps a conversation: a long chunk would only be interrupted inline
            rows = await self._rows(_heads_sql(len(chunk)), chunk,
                                    inline=len(chunk) * 25 < self._inline_steps)
            out.update((conv, seq or 0) for conv, seq in rows)
        return out

    async def messages(self, conv: str, after: int, limit: int) -> list[Message]:
        def read(conn: sqlite3.Connection) -> list[Message]:
            # the records are made where the rows are read (a reader thread, for many)
            return [_row_to_message(r) for r in _fetch(
                conn, f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq>? "
                "ORDER BY seq LIMIT ?", (conv, after, limit))]
        return await self.read(read)

    async def message(self, conv: str, seq: int) -> Message | None:
        rows = await self._rows(f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq=?",
                                (conv, seq))
        return _row_to_message(rows[0]) if rows else None

    async def lookup_cid(self, conv: str, sender: str, cid: str) -> tuple[int, int] | None:
        rows = await self._rows("SELECT seq, prev FROM messages WHERE conv=? AND sender=? AND "
                                "cid=?", (conv, sender, cid))
        return (rows[0][0], rows[0][1]) if rows else None

    # -- state store ------------------------------------------------------
    async def device_state(self, user: str, device: str) -> DeviceState:
        def read(conn: sqlite3.Connection) -> DeviceState:
            known = bool(_fetch(conn, "SELECT 1 FROM devices WHERE user=? AND device=?",
                                (user, device)))
            rows = _fetch(conn, "SELECT conv, acked FROM cursors WHERE user=? AND device=?",
                          (user, device))
            return DeviceState(known, dict(rows))
        return await self.read(read)

    async def register_device(self, user: str, device: str, baseline: dict[str, int]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO devices VALUES (?,?,strftime('%s','now'))",
                         (user, device))
            conn.executemany("INSERT OR IGNORE INTO cursors VALUES (?,?,?,?)",
                             [(user, device, c, s) for c, s in baseline.items()])
        await self.write(op)

    async def set_cursor(self, user: str, device: str, conv: str, acked: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO cursors VALUES (?,?,?,?) ON CONFLICT(user, device, conv) "
                         "DO UPDATE SET acked=max(acked, excluded.acked)",
                         (user, device, conv, acked))
        self.write_nowait(op)

    async def watermark(self, user: str, conv: str) -> Watermark:
        rows = await self._rows("SELECT delivered, read FROM watermarks WHERE conv=? AND "
                                "user=?", (conv, user))
        return Watermark(rows[0][0], rows[0][1]) if rows else Watermark()

    async def set_watermark(self, user: str, conv: str, mark: Watermark) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO watermarks VALUES (?,?,?,?) ON CONFLICT(conv, user) DO "
                         "UPDATE SET delivered=max(delivered, excluded.delivered), "
                         "read=max(read, excluded.read)",
                         (conv, user, mark.delivered, mark.read))
        self.write_nowait(op)

    def _cache_token(self, token: PushToken) -> None:
        self._uncache_token(token.user, token.device)
        self._tokens.setdefault(token.user, {})[token.device] = token
        self._holders.setdefault(token.token, set()).add((token.user, token.device))

    def _uncache_token(self, user: str, device: str) -> None:
        old = self._tokens.get(user, {}).pop(device, None)
        if old is None:
            return
        if not self._tokens[user]:
            del self._tokens[user]
        holders = self._holders.get(old.token, set())
        holders.discard((user, device))
        if not holders:
            self._holders.pop(old.token, None)

    async def set_push_token(self, token: PushToken) -> None:
        """This device's token; taken from any other device or account that had it.

        A token addresses one installed app: the account that registered it last (a new
        login on the phone) is the one whose notifications go there, no one else's.
        """
        def op(conn: sqlite3.Connection) -> None:
            # one savepoint of the writer: nobody sees the token held twice, or not at all
            conn.execute("DELETE FROM push_tokens WHERE token = ? AND NOT (user = ? AND "
                         "device = ?)", (token.token, token.user, token.device))
            conn.execute("INSERT OR REPLACE INTO push_tokens VALUES (?,?,?,?)",
                         (token.user, token.device, token.platform, token.token))
        await self.write(op)
        for user, device in list(self._holders.get(token.token, ())):
            self._uncache_token(user, device)
        self._cache_token(token)

    async def push_tokens(self, users: list[str]) -> list[PushToken]:
        return [t for u in users for t in self._tokens.get(u, {}).values()]

    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if token is None:
                conn.execute("DELETE FROM push_tokens WHERE user = ? AND device = ?",
                             (user, device))
            else:
                conn.execute("DELETE FROM push_tokens WHERE user = ? AND device = ? AND "
                             "token = ?", (user, device, token))
        await self.write(op)
        current = self._tokens.get(user, {}).get(device)
        if current is not None and (token is None or current.token == token):
            self._uncache_token(user, device)


def _conv_from_row(row: tuple[Any, ...]) -> Conversation:
    conv, members, home, title, created_ts = row
    return Conversation(conv, tuple(json.loads(members)), home, title, created_ts)


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("background write failed: %s", fut.exception())


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
