"""SQLite (WAL) message store, state store and event log of the embedded backend.

One file per region. Writes go through one writer thread that commits in
groups: every operation queued while the previous commit ran lands in the
next transaction, so one fsync serves many sends and acks. Each operation
runs in its own savepoint, so one bad operation fails alone. Reads use a
second connection on the event loop's thread; WAL lets them see every commit
without blocking the writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
"""
SCHEMA_VERSION = "1"
_MSG_COLS = "conv, seq, prev, mid, cid, sender, from_device, ts, kind, body, media"
_MAX_GROUP = 1024

Op = Callable[[sqlite3.Connection], Any]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the writer reports it, which `sent` relies on
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def _row_to_message(row: tuple[Any, ...]) -> Message:
    conv, seq, prev, mid, cid, sender, device, ts, kind, body, media = row
    return Message(conv, seq, prev, mid, cid, sender, device, ts, kind, body,
                   json.loads(media) if media else None)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        init = _connect(path)
        init.executescript(SCHEMA)
        init.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        init.close()
        self._read = _connect(path)
        # every message asks for its members' tokens: keep them in memory, written through
        self._tokens: dict[str, dict[str, PushToken]] = {}
        for row in self._read.execute("SELECT user, device, platform, token FROM push_tokens"):
            self._tokens.setdefault(row[0], {})[row[1]] = PushToken(*row)
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
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        self._read.close()

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
        row = self._read.execute("SELECT conv, members, home, title, created_ts FROM "
                                 "conversations WHERE conv=?", (conv,)).fetchone()
        return _conv_from_row(row) if row else None

    async def conversations_of(self, user: str) -> list[str]:
        rows = self._read.execute("SELECT conv FROM members WHERE user=?", (user,)).fetchall()
        return [r[0] for r in rows]

    async def head(self, conv: str) -> int:
        row = self._read.execute("SELECT max(seq) FROM messages WHERE conv=?", (conv,)).fetchone()
        return row[0] or 0

    async def messages(self, conv: str, after: int, limit: int) -> list[Message]:
        rows = self._read.execute(f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq>? "
                                  "ORDER BY seq LIMIT ?", (conv, after, limit)).fetchall()
        return [_row_to_message(r) for r in rows]

    async def message(self, conv: str, seq: int) -> Message | None:
        row = self._read.execute(f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq=?",
                                 (conv, seq)).fetchone()
        return _row_to_message(row) if row else None

    async def lookup_cid(self, conv: str, sender: str, cid: str) -> tuple[int, int] | None:
        row = self._read.execute("SELECT seq, prev FROM messages WHERE conv=? AND sender=? AND "
                                 "cid=?", (conv, sender, cid)).fetchone()
        return (row[0], row[1]) if row else None

    # -- state store ------------------------------------------------------
    async def device_state(self, user: str, device: str) -> DeviceState:
        known = self._read.execute("SELECT 1 FROM devices WHERE user=? AND device=?",
                                   (user, device)).fetchone() is not None
        rows = self._read.execute("SELECT conv, acked FROM cursors WHERE user=? AND device=?",
                                  (user, device)).fetchall()
        return DeviceState(known, dict(rows))

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
        row = self._read.execute("SELECT delivered, read FROM watermarks WHERE conv=? AND user=?",
                                 (conv, user)).fetchone()
        return Watermark(row[0], row[1]) if row else Watermark()

    async def set_watermark(self, user: str, conv: str, mark: Watermark) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO watermarks VALUES (?,?,?,?) ON CONFLICT(conv, user) DO "
                         "UPDATE SET delivered=max(delivered, excluded.delivered), "
                         "read=max(read, excluded.read)",
                         (conv, user, mark.delivered, mark.read))
        self.write_nowait(op)

    async def set_push_token(self, token: PushToken) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO push_tokens VALUES (?,?,?,?)",
                         (token.user, token.device, token.platform, token.token))
        await self.write(op)
        self._tokens.setdefault(token.user, {})[token.device] = token

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
            del self._tokens[user][device]


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
