"""The store contract: MessageStore and StateStore behave the same in both families.

Every test runs against the embedded SqliteStore and the cluster CassandraStore
(see conftest.py). Each test uses ids of its own, so the Cassandra tests can
share one keyspace.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from typing import Any

from runtime.core.watermarks import Watermark
from runtime.ports import Conversation, Message, PushToken
from tests.contract.conftest import TEST_BUCKET_SIZE, settle, write


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def msg(conv: str, seq: int, sender: str = "alice", cid: str | None = None,
        body: str | None = None, media: dict[str, Any] | None = None) -> Message:
    return Message(conv, seq, seq - 1, f"m-{conv}-{seq}", cid or f"c{seq}", sender, "phone",
                   1_700_000_000_000 + seq, "text", body if body is not None else f"body {seq}",
                   media)


def chain(conv: str, seqs: list[int], sender: str = "alice") -> list[Message]:
    """Messages at `seqs`, each `prev` pointing at the one before (gaps allowed)."""
    out, prev = [], 0
    for seq in seqs:
        m = msg(conv, seq, sender)
        out.append(Message(m.conv, seq, prev, m.mid, m.cid, m.sender, m.from_device, m.ts,
                           m.kind, m.body, m.media))
        prev = seq
    return out


async def replay(store: Any, messages: list[Message]) -> None:
    """Write an already stored batch again: the cluster writer upserts, the embedded log
    refuses duplicates; in both cases nothing stored may change."""
    if hasattr(store, "upsert_messages"):
        await store.upsert_messages(messages)
    else:
        try:
            await store.append(messages)
        except sqlite3.IntegrityError:
            pass
        else:
            raise AssertionError("the embedded log accepted a duplicate (conv, seq)")


# -- conversations ----------------------------------------------------------
async def test_create_conversation_is_idempotent_and_first_writer_wins(store: Any) -> None:
    conv = uid("conv")
    first = Conversation(conv, ("alice", "bob"), "eu", "first", 111)
    assert await store.create_conversation(first) == first
    second = Conversation(conv, ("carol",), "us", "second", 222)
    assert await store.create_conversation(second) == first
    assert await store.create_conversation(first) == first
    assert await store.get_conversation(conv) == first
    assert await store.conversations_of("carol") == []


async def test_racing_creates_end_with_one_conversation(store: Any) -> None:
    conv = uid("conv")
    candidates = [Conversation(conv, (f"user{i}", "shared"), f"r{i}", f"t{i}", i)
                  for i in range(8)]
    results = await asyncio.gather(*(store.create_conversation(c) for c in candidates))
    assert len(set(results)) == 1
    winner = results[0]
    assert winner in candidates
    assert await store.get_conversation(conv) == winner
    for c in candidates:
        expected = [conv] if c.members[0] in winner.members else []
        assert await store.conversations_of(c.members[0]) == expected


async def test_conversation_title_none_and_member_order_round_trip(store: Any) -> None:
    conv = Conversation(uid("conv"), ("zed", "amy", "mo"), "eu", None, 0)
    await store.create_conversation(conv)
    assert await store.get_conversation(conv.conv) == conv


async def test_unknown_conversation(store: Any) -> None:
    conv = uid("nope")
    assert await store.get_conversation(conv) is None
    assert await store.head(conv) == 0
    assert await store.messages(conv, 0, 10) == []
    assert await store.message(conv, 1) is None
    assert await store.lookup_cid(conv, "alice", "c1") is None


async def test_conversations_of_is_per_member(store: Any) -> None:
    a, b, c, d = (uid(n) for n in "abcd")
    one, two = uid("one"), uid("two")
    await store.create_conversation(Conversation(one, (a, b), "eu"))
    await store.create_conversation(Conversation(two, (b, c), "eu"))
    assert await store.conversations_of(a) == [one]
    assert sorted(await store.conversations_of(b)) == sorted([one, two])
    assert await store.conversations_of(c) == [two]
    assert await store.conversations_of(d) == []


# -- messages ---------------------------------------------------------------
async def test_messages_ascending_and_paged_across_buckets(store: Any) -> None:
    conv = uid("conv")
    stored = chain(conv, list(range(1, 36)))
    batches = [stored[i:i + 6] for i in range(0, len(stored), 6)]
    random.Random(7).shuffle(batches)  # the writer may land batches out of order
    for batch in batches:
        await write(store, batch)
    assert await store.head(conv) == 35
    assert await store.messages(conv, 0, 100) == stored
    assert await store.messages(conv, 0, 35) == stored
    b = TEST_BUCKET_SIZE
    # windows that start, end or straddle a bucket boundary
    assert [m.seq for m in await store.messages(conv, b - 1, 3)] == [b, b + 1, b + 2]
    assert [m.seq for m in await store.messages(conv, b - 3, 3)] == [b - 2, b - 1, b]
    assert [m.seq for m in await store.messages(conv, 8, 25)] == list(range(9, 34))
    assert await store.messages(conv, 35, 10) == []
    assert await store.messages(conv, 34, 10) == [stored[-1]]
    assert await store.messages(conv, 5, 0) == []
    paged: list[Message] = []
    after = 0
    while page := await store.messages(conv, after, 7):
        assert len(page) <= 7
        paged.extend(page)
        after = page[-1].seq
    assert paged == stored


async def test_messages_skip_an_empty_bucket(store: Any) -> None:
    conv = uid("conv")
    b = TEST_BUCKET_SIZE
    stored = chain(conv, [1, 2, 3, 2 * b + 5, 2 * b + 6])
    await write(store, stored)
    assert await store.messages(conv, 0, 10) == stored
    assert await store.messages(conv, 3, 1) == [stored[3]]
    assert await store.head(conv) == 2 * b + 6


async def test_messages_are_per_conversation(store: Any) -> None:
    one, two = uid("one"), uid("two")
    await write(store, chain(one, [1, 2, 3]) + chain(two, [1, 2]))
    assert [m.conv for m in await store.messages(one, 0, 10)] == [one] * 3
    assert await store.head(one) == 3
    assert await store.head(two) == 2


async def test_heads_is_head_of_each_conversation(store: Any) -> None:
    b = TEST_BUCKET_SIZE
    one, two, gap, empty, unknown = (uid(n) for n in ("one", "two", "gap", "empty", "nope"))
    await store.create_conversation(Conversation(empty, ("alice", "bob"), "eu"))
    await write(store, chain(one, [1, 2, 3]) + chain(two, [1]) + chain(gap, [1, 2 * b + 5]))
    asked = [two, unknown, one, gap, empty, one]  # any order, repeats, unknowns
    heads = await store.heads(asked)
    assert heads == {one: 3, two: 1, gap: 2 * b + 5, empty: 0, unknown: 0}
    for conv in asked:
        assert heads[conv] == await store.head(conv)
    assert await store.heads([]) == {}
    await write(store, [msg(two, 4)])
    assert (await store.heads([two]))[two] == 4  # a later read sees a later write


async def test_message_round_trip_with_media_and_unicode(store: Any) -> None:
    conv = uid("conv")
    media = {"id": "blob-1", "mime": "image/png", "size": 1234, "dims": [640, 480],
             "nested": {"caption": "ça va 🐈", "none": None, "ok": True, "ratio": 1.5}}
    body = "héllo wörld — 你好 — مرحبا — 🎉👩‍👩‍👧 — \"quoted\" 'single' \\ back\nnew line"
    with_media = msg(conv, 1, body=body, media=media)
    plain = msg(conv, 2, body="")
    await write(store, [with_media, plain])
    assert await store.message(conv, 1) == with_media
    assert (await store.message(conv, 1)).media == media
    assert await store.message(conv, 2) == plain
    assert (await store.message(conv, 2)).media is None
    assert await store.message(conv, 3) is None
    assert [m.to_wire() for m in await store.messages(conv, 0, 5)] == [
        with_media.to_wire(), plain.to_wire()]


async def test_head_never_regresses_when_an_old_batch_is_replayed(store: Any) -> None:
    conv = uid("conv")
    stored = chain(conv, list(range(1, 26)))
    old, new = stored[:5], stored[5:]
    await write(store, old)
    await write(store, new)
    assert await store.head(conv) == 25
    await replay(store, old)
    assert await store.head(conv) == 25
    assert await store.messages(conv, 0, 100) == stored


async def test_replaying_a_batch_changes_nothing(store: Any) -> None:
    conv = uid("conv")
    batch = chain(conv, list(range(1, 2 * TEST_BUCKET_SIZE + 4)))
    await write(store, batch)
    before = await store.messages(conv, 0, 1000)
    await replay(store, batch)
    await replay(store, batch[3:9])
    assert await store.messages(conv, 0, 1000) == before == batch
    assert await store.head(conv) == batch[-1].seq
    for m in batch:
        assert await store.lookup_cid(conv, m.sender, m.cid) == (m.seq, m.prev)


async def test_lookup_cid_is_per_sender_and_conversation(store: Any) -> None:
    conv, other = uid("conv"), uid("other")
    first = msg(conv, 1, "alice", cid="same")
    second = Message(conv, 2, 1, "m2", "same-b", "bob", "laptop", 2, "text", "hi")
    await write(store, [first, second])
    assert await store.lookup_cid(conv, "alice", "same") == (1, 0)
    assert await store.lookup_cid(conv, "bob", "same-b") == (2, 1)
    assert await store.lookup_cid(conv, "bob", "same") is None
    assert await store.lookup_cid(conv, "alice", "same-b") is None
    assert await store.lookup_cid(other, "alice", "same") is None


# -- state: devices, cursors, watermarks, push tokens -------------------------
async def test_device_state_and_register_baseline(store: Any) -> None:
    user, c1, c2, c3 = uid("u"), uid("c1"), uid("c2"), uid("c3")
    state = await store.device_state(user, "phone")
    assert (state.known, state.cursors) == (False, {})
    await store.register_device(user, "phone", {c1: 5, c2: 0})
    state = await store.device_state(user, "phone")
    assert (state.known, state.cursors) == (True, {c1: 5, c2: 0})
    # registering again keeps the cursors there are and adds the missing ones
    await store.register_device(user, "phone", {c1: 9, c3: 2})
    assert (await store.device_state(user, "phone")).cursors == {c1: 5, c2: 0, c3: 2}
    other = await store.device_state(user, "tablet")
    assert (other.known, other.cursors) == (False, {})


async def test_register_with_empty_baseline_makes_the_device_known(store: Any) -> None:
    user = uid("u")
    await store.register_device(user, "phone", {})
    state = await store.device_state(user, "phone")
    assert (state.known, state.cursors) == (True, {})


async def test_cursors_are_monotonic_and_per_device(store: Any) -> None:
    user, conv = uid("u"), uid("conv")
    await store.register_device(user, "phone", {conv: 2})
    await store.set_cursor(user, "phone", conv, 5)
    await store.set_cursor(user, "phone", conv, 3)  # a late or replayed ack
    await settle(store)
    assert (await store.device_state(user, "phone")).cursors == {conv: 5}
    await store.set_cursor(user, "phone", conv, 8)
    await store.set_cursor(user, "tablet", conv, 1)
    await settle(store)
    assert (await store.device_state(user, "phone")).cursors == {conv: 8}
    assert (await store.device_state(user, "tablet")).cursors == {conv: 1}
    # a cursor alone does not make a device known
    assert (await store.device_state(user, "tablet")).known is False


async def test_watermarks_are_monotonic_per_field(store: Any) -> None:
    user, other, conv = uid("u"), uid("v"), uid("conv")
    assert await store.watermark(user, conv) == Watermark(0, 0)
    await store.set_watermark(user, conv, Watermark(5, 3))
    await settle(store)
    assert await store.watermark(user, conv) == Watermark(5, 3)
    await store.set_watermark(user, conv, Watermark(4, 4))
    await settle(store)
    assert await store.watermark(user, conv) == Watermark(5, 4)
    await store.set_watermark(user, conv, Watermark(2, 1))  # the sequencer replays
    await settle(store)
    assert await store.watermark(user, conv) == Watermark(5, 4)
    await store.set_watermark(user, conv, Watermark(9, 9))
    await settle(store)
    assert await store.watermark(user, conv) == Watermark(9, 9)
    assert await store.watermark(other, conv) == Watermark(0, 0)


async def test_racing_watermark_writes_keep_the_highest(store: Any) -> None:
    user, conv = uid("u"), uid("conv")
    marks = [Watermark(d, r) for d in range(0, 40, 3) for r in range(0, 30, 7)]
    random.Random(3).shuffle(marks)
    await asyncio.gather(*(store.set_watermark(user, conv, m) for m in marks))
    await settle(store)
    assert await store.watermark(user, conv) == Watermark(max(m.delivered for m in marks),
                                                          max(m.read for m in marks))


async def test_push_tokens_upsert_per_device(store: Any) -> None:
    u, v, nobody = uid("u"), uid("v"), uid("nobody")
    await store.set_push_token(PushToken(u, "phone", "fcm", "t1"))
    await store.set_push_token(PushToken(u, "phone", "fcm", "t2"))
    await store.set_push_token(PushToken(u, "tablet", "apns", "t3"))
    await store.set_push_token(PushToken(v, "phone", "apns", "t4"))
    assert set(await store.push_tokens([u])) == {PushToken(u, "phone", "fcm", "t2"),
                                                  PushToken(u, "tablet", "apns", "t3")}
    assert len(await store.push_tokens([u])) == 2
    assert {t.token for t in await store.push_tokens([u, v, nobody])} == {"t2", "t3", "t4"}
    assert await store.push_tokens([nobody]) == []
    assert await store.push_tokens([]) == []


async def test_push_token_removal_is_per_device(store: Any) -> None:
    u = uid("u")
    await store.set_push_token(PushToken(u, "phone", "fcm", "t1"))
    await store.set_push_token(PushToken(u, "tablet", "apns", "t2"))
    await store.remove_push_token(u, "phone")
    assert await store.push_tokens([u]) == [PushToken(u, "tablet", "apns", "t2")]
    await store.remove_push_token(u, "phone")  # removing twice is fine
    await store.remove_push_token(uid("nobody"), "phone")
    await store.set_push_token(PushToken(u, "phone", "fcm", "t3"))  # registers again
    assert set(await store.push_tokens([u])) == {PushToken(u, "tablet", "apns", "t2"),
                                                  PushToken(u, "phone", "fcm", "t3")}


async def test_push_token_removal_spares_a_token_registered_since(store: Any) -> None:
    u = uid("u")
    await store.set_push_token(PushToken(u, "phone", "fcm", "old"))
    await store.set_push_token(PushToken(u, "phone", "fcm", "new"))  # the app reinstalled
    await store.remove_push_token(u, "phone", "old")  # the provider's 410 for the old one
    assert await store.push_tokens([u]) == [PushToken(u, "phone", "fcm", "new")]
    await store.remove_push_token(u, "phone", "new")
    assert await store.push_tokens([u]) == []


async def test_a_push_token_moves_to_the_account_that_registered_it_last(store: Any) -> None:
    a, b, c = uid("a"), uid("b"), uid("c")
    shared, other = uid("tok"), uid("tok")
    await store.set_push_token(PushToken(a, "phone", "fcm", shared))
    await store.set_push_token(PushToken(a, "tablet", "apns", other))
    await store.set_push_token(PushToken(b, "phone", "fcm", shared))  # b logs in on a's phone
    # a's notifications no longer go to that phone; a's other device keeps its own token
    assert await store.push_tokens([a]) == [PushToken(a, "tablet", "apns", other)]
    assert await store.push_tokens([b]) == [PushToken(b, "phone", "fcm", shared)]
    await store.set_push_token(PushToken(b, "phone", "fcm", shared))  # again: b keeps it
    assert await store.push_tokens([b]) == [PushToken(b, "phone", "fcm", shared)]
    # under another device id too (the app reinstalled), and back to the first account
    await store.set_push_token(PushToken(c, "ipad", "fcm", shared))
    assert await store.push_tokens([a, b]) == [PushToken(a, "tablet", "apns", other)]
    await store.set_push_token(PushToken(a, "phone", "fcm", shared))
    assert set(await store.push_tokens([a, b, c])) == {PushToken(a, "phone", "fcm", shared),
                                                       PushToken(a, "tablet", "apns", other)}
    await store.remove_push_token(a, "phone")  # a logs out: the token is with nobody
    assert await store.push_tokens([a, b, c]) == [PushToken(a, "tablet", "apns", other)]
