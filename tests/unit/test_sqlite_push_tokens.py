"""The embedded store's push tokens: a token moves between accounts on disk, not only in
the in-memory copy that every message's fan-out reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.ports import PushToken


def rows(path: Path) -> set[tuple[str, ...]]:
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT user, device, platform, token FROM push_tokens"))


async def test_a_moved_token_stays_moved_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "region.db"
    store = SqliteStore(path)
    await store.set_push_token(PushToken("alice", "phone", "fcm", "T"))
    await store.set_push_token(PushToken("alice", "tablet", "apns", "U"))
    await store.set_push_token(PushToken("bob", "phone", "fcm", "T"))
    assert rows(path) == {("alice", "tablet", "apns", "U"), ("bob", "phone", "fcm", "T")}
    await store.close()
    reopened = SqliteStore(path)  # the copy in memory is read back from the table
    assert await reopened.push_tokens(["alice", "bob"]) == [
        PushToken("alice", "tablet", "apns", "U"), PushToken("bob", "phone", "fcm", "T")]
    await reopened.set_push_token(PushToken("bob", "phone", "fcm", "V"))  # bob's new token
    # T is bob's no more: alice registering it again takes it from nobody
    await reopened.set_push_token(PushToken("carol", "phone", "fcm", "T"))
    assert rows(path) == {("alice", "tablet", "apns", "U"), ("bob", "phone", "fcm", "V"),
                          ("carol", "phone", "fcm", "T")}
    assert await reopened.push_tokens(["alice", "bob", "carol"]) == [
        PushToken("alice", "tablet", "apns", "U"), PushToken("bob", "phone", "fcm", "V"),
        PushToken("carol", "phone", "fcm", "T")]
    await reopened.close()


async def test_a_store_holding_a_token_twice_from_before_gives_it_up_on_registration(
        tmp_path: Path) -> None:
    """A database written before tokens moved may hold one token for two accounts: the
    next registration of it leaves it with the registering device only."""
    path = tmp_path / "region.db"
    await SqliteStore(path).close()  # creates the schema
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO push_tokens VALUES (?,?,?,?)",
                         [("alice", "phone", "fcm", "T"), ("bob", "phone", "fcm", "T")])
    store = SqliteStore(path)
    assert len(await store.push_tokens(["alice", "bob"])) == 2
    await store.set_push_token(PushToken("carol", "phone", "fcm", "T"))
    assert await store.push_tokens(["alice", "bob", "carol"]) == [
        PushToken("carol", "phone", "fcm", "T")]
    assert rows(path) == {("carol", "phone", "fcm", "T")}
    await store.close()
