"""SessionMachine: the rules of one device session, driven without a socket or a loop."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core import errors
from runtime.core import frames as f
from runtime.core import session as sm
from runtime.core.media import Refusal
from runtime.core.presence import PresenceState
from runtime.core.ratelimit import TokenBucket
from runtime.ports import Conversation, Message, Receipt, TypingEvent

PROPS = settings(max_examples=300, deadline=None)
ME, PHONE, LAPTOP = "alice", "phone", "laptop"


def machine(*, rate: float = 1000.0, burst: int = 1000, strikes: int = 50,
            limits: f.Limits = f.Limits()) -> sm.SessionMachine:
    return sm.SessionMachine(ME, PHONE, "s1", region="eu", heartbeat_ms=15000, limits=limits,
                             bucket=TokenBucket(rate, burst, strikes))


def opened(cursors: dict[str, int] | None = None, **kw: Any) -> sm.SessionMachine:
    m = machine(**kw)
    m.opened(cursors or {})
    return m


def msg(conv: str, seq: int, prev: int | None = None, sender: str = "bob",
        device: str = "d") -> Message:
    return Message(conv, seq, seq - 1 if prev is None else prev, f"m{seq}", f"c{seq}", sender,
                   device, 1000 + seq, "text", f"body {seq}")


def conv(members: tuple[str, ...] = (ME, "bob"), cid: str = "c1") -> Conversation:
    return Conversation(cid, members, "eu")


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def requests(actions: list[sm.Action]) -> list[sm.Action]:
    """What is left once the bookkeeping actions every accepted frame carries are removed."""
    return [a for a in actions if not isinstance(a, sm.Heartbeat | sm.Received)]


def only_reply(actions: list[sm.Action]) -> dict[str, Any]:
    rest = requests(actions)
    assert len(rest) == 1 and isinstance(rest[0], sm.Reply), actions
    return rest[0].frame


# -- hello and resume ------------------------------------------------------------------------


def test_hello_comes_after_registration_and_opens_the_session():
    m = machine()
    assert m.state is sm.State.CONNECTING
    actions = m.opened({"c1": 4})
    assert actions[0] == sm.Register()
    assert actions[1] == sm.Reply({"t": "hello", "user": ME, "device": PHONE, "region": "eu",
                                   "session": "s1", "heartbeat_ms": 15000})
    assert m.state is sm.State.OPEN and m.cursors == {"c1": 4}


def test_a_closing_session_never_says_hello():
    m = machine()
    m.close(errors.CLOSE_TRY_AGAIN, "unavailable", flush=True)
    assert m.opened({}) == []


def test_resume_fills_from_the_acked_cursor_once():
    m = opened({"c1": 3, "c2": 7})
    assert m.resume("c1", 5) == [sm.Fill("c1", 3)]
    assert m.resume("c1", 5) == []  # a retried resume does not fill twice
    assert m.resume("c2", 7) == []  # nothing new
    assert m.resume("c3", 0) == []  # an empty conversation the device never saw


def test_catch_up_compares_with_what_was_sent_not_with_the_cursor():
    m = opened({"c1": 3})
    assert m.deliver_message(msg("c1", 4)) == [sm.Deliver(msg("c1", 4))]
    assert m.catch_up("c1", 4) == []
    assert m.catch_up("c1", 6) == [sm.Fill("c1", 4)]


# -- frames ----------------------------------------------------------------------------------


def test_ping_is_answered_with_its_id():
    actions = opened().receive_frame(frame(t="ping", id="p1"), 0.0)
    assert actions[:2] == [sm.Heartbeat(), sm.Received("ping")]
    assert only_reply(actions) == {"t": "pong", "id": "p1"}


def test_send_from_a_member_is_submitted():
    m = opened()
    actions = m.receive_frame(frame(t="send", id="s", conv="c1", cid="x", kind="text",
                                    body="hi"), 0.0)
    (auth,) = requests(actions)
    assert isinstance(auth, sm.Authorize) and auth.id == "s"
    (submit,) = m.authorized(auth, conv())
    assert submit == sm.Submit("c1", "x", ME, PHONE, "text", "hi", None, "s")


@pytest.mark.parametrize("found,code", [(None, errors.NOT_FOUND),
                                        (conv(("bob", "carol")), errors.FORBIDDEN)])
def test_frames_naming_a_conversation_need_membership(found, code):
    for raw in ({"t": "send", "conv": "c1", "cid": "x", "kind": "text", "body": ""},
                {"t": "ack", "conv": "c1", "seq": 1}, {"t": "read", "conv": "c1", "seq": 1},
                {"t": "typing", "conv": "c1"}, {"t": "sync", "conv": "c1"}):
        m = opened()
        (auth,) = requests(m.receive_frame(json.dumps({**raw, "id": "q"}), 0.0))
        [reply] = m.authorized(auth, found)
        assert isinstance(reply, sm.Reply)
        assert reply.frame["code"] == code and reply.frame["id"] == "q"


def test_member_acks_reads_and_typing_are_forwarded():
    m = opened()
    ack, read, typing = (requests(m.receive_frame(frame(**raw), 0.0))[0] for raw in (
        {"t": "ack", "conv": "c1", "seq": 3}, {"t": "read", "conv": "c1", "seq": 2},
        {"t": "typing", "conv": "c1"}))
    assert m.authorized(ack, conv()) == [sm.ForwardAck("c1", 3, None)]
    assert m.authorized(read, conv()) == [sm.ForwardRead("c1", 2, None)]
    assert m.authorized(typing, conv()) == [sm.PublishTyping("c1", None)]


def test_send_with_media_is_checked_before_it_is_submitted():
    m = opened()
    media = {"key": "k"}
    (auth,) = requests(m.receive_frame(frame(t="send", id="s", conv="c1", cid="x",
                                             kind="image", body="", media=media), 0.0))
    (attach,) = m.authorized(auth, conv())
    assert isinstance(attach, sm.AttachMedia)
    assert m.attached(attach, None)[0].frame["code"] == errors.UNAVAILABLE  # type: ignore[union-attr]
    refused = m.attached(attach, Refusal(errors.FORBIDDEN, "not yours"))
    assert refused == [sm.error(errors.FORBIDDEN, "not yours", "s")]
    checked = {"url": "http://media/x"}
    (submit,) = m.attached(attach, checked)
    assert isinstance(submit, sm.Submit) and submit.media == checked


def test_the_sequencers_answer_becomes_sent_or_an_error():
    m = opened()
    submit = sm.Submit("c1", "x", ME, PHONE, "text", "hi", None, "s")
    stored = msg("c1", 5, sender=ME, device=PHONE)
    assert m.sent(submit, stored) == [sm.Reply(
        {"t": "sent", "conv": "c1", "cid": "c5", "seq": 5, "prev": 4, "ts": 1005, "id": "s"})]
    assert m.not_sent(submit, retryable=True) == [
        sm.error(errors.UNAVAILABLE, "not stored, retry with the same cid", "s")]
    assert m.not_sent(submit, retryable=True, detail="away") == [
        sm.error(errors.UNAVAILABLE, "not stored, retry with the same cid: away", "s")]
    assert m.not_sent(submit, retryable=False) == [
        sm.error(errors.INTERNAL, "internal error; retry with the same cid", "s")]


def test_bad_frames_get_an_error_and_the_session_stays_open():
    m = opened(limits=f.Limits(max_frame_bytes=200))
    cases = [("not json", errors.BAD_FRAME, None),
             (b"\x00binary", errors.BAD_FRAME, None),
             (frame(t="nope", id="a"), errors.BAD_FRAME, "a"),
             (frame(t="ack", id="b", conv="c1"), errors.BAD_FRAME, "b"),
             (frame(t="ping", id="c", pad="x" * 300), errors.TOO_LARGE, "c")]
    for data, code, fid in cases:
        reply = only_reply(m.receive_frame(data, 0.0))
        assert reply["t"] == "error" and reply["code"] == code
        assert reply.get("id") == fid
    assert m.state is sm.State.OPEN
    assert only_reply(m.receive_frame(frame(t="ping"), 0.0)) == {"t": "pong"}


def test_rate_limit_refuses_with_retry_then_cuts_off():
    m = opened(rate=1.0, burst=2, strikes=2)
    for _ in range(2):
        assert sm.Heartbeat() in m.receive_frame(frame(t="ping"), 10.0)
    for _ in range(2):
        [refused] = m.receive_frame(frame(t="ping", id="late"), 10.0)
        assert refused == sm.error(errors.RATE_LIMITED, "slow down", "late", retry_ms=1000)
    # a third strike in a row is more than max_strikes: a flushing policy close
    assert m.receive_frame(frame(t="ping"), 10.0) == [
        sm.Close(errors.CLOSE_POLICY, "rate limit exceeded", True, "rate_limit")]
    assert m.closing
    assert m.receive_frame(frame(t="ping"), 100.0) == []


def test_the_bucket_refills_with_time():
    m = opened(rate=1.0, burst=1, strikes=5)
    assert requests(m.receive_frame(frame(t="ping"), 0.0))
    assert only_reply(m.receive_frame(frame(t="ping"), 0.5))["code"] == errors.RATE_LIMITED
    assert only_reply(m.receive_frame(frame(t="ping"), 1.5)) == {"t": "pong"}


def test_a_closing_session_ignores_frames_and_events():
    m = opened()
    assert m.close(errors.CLOSE_GOING_AWAY, "bye") == [
        sm.Close(errors.CLOSE_GOING_AWAY, "bye", False, None)]
    assert m.close(errors.CLOSE_POLICY, "again") == []  # closes once
    assert m.receive_frame(frame(t="ping", id="x"), 0.0) == []
    assert m.deliver_message(msg("c1", 1)) == []
    assert m.deliver_receipt(Receipt("c1", "bob", "read", 1)) == []
    assert m.presence(PresenceState("bob", True, 1.0)) == []
    assert m.expire() == []
    assert m.resume("c1", 9) == []


def test_token_expiry_says_why_then_closes_after_it():
    m = opened()
    assert m.expire() == [
        sm.Reply({"t": "error", "code": errors.UNAUTHORIZED,
                  "message": "token expired; reconnect with a fresh token"}),
        sm.Close(errors.CLOSE_POLICY, "token expired", True, "token_expired")]
    assert m.receive_frame(frame(t="ping"), 0.0) == []


def test_connection_lost_ends_the_session():
    m = opened()
    m.connection_lost()
    assert m.state is sm.State.CLOSED and m.close(1000, "x") == []


# -- events: receipts, typing, presence ------------------------------------------------------


def test_receipts_of_other_users_are_relayed():
    m = opened()
    for kind in ("delivered", "read"):
        assert m.deliver_receipt(Receipt("c1", "bob", kind, 4, "bobs-phone")) == [sm.Reply(
            {"t": "receipt", "conv": "c1", "user": "bob", "kind": kind, "seq": 4})]


def test_own_read_syncs_other_devices_but_not_the_reader():
    phone = opened()
    laptop = sm.SessionMachine(ME, LAPTOP, "s2", region="eu", heartbeat_ms=1, limits=f.Limits(),
                               bucket=TokenBucket(1, 1))
    read = Receipt("c1", ME, "read", 9, PHONE)
    assert phone.deliver_receipt(read) == []
    assert laptop.deliver_receipt(read) == [sm.Reply({"t": "read_sync", "conv": "c1", "seq": 9})]
    # a delivered receipt of one's own devices is no news to any of them
    assert laptop.deliver_receipt(Receipt("c1", ME, "delivered", 9, PHONE)) == []


def test_typing_and_presence_frames():
    m = opened()
    assert m.deliver_typing(TypingEvent("c1", "bob")) == [
        sm.Reply({"t": "typing", "conv": "c1", "user": "bob"})]
    assert m.presence(PresenceState("bob", False, 2.5)) == [
        sm.Reply({"t": "presence", "user": "bob", "state": "offline", "last_active": 2500})]


# -- ordering --------------------------------------------------------------------------------


def test_live_messages_in_order_are_delivered_and_a_gap_is_filled_from_the_store():
    m = opened({"c1": 1})
    assert m.deliver_message(msg("c1", 1)) == []  # acked before this connection opened
    assert m.deliver_message(msg("c1", 2)) == [sm.Deliver(msg("c1", 2))]
    assert m.deliver_message(msg("c1", 2)) == []  # a duplicate
    assert m.deliver_message(msg("c1", 5)) == [sm.Fill("c1", 2)]  # 3 and 4 went missing
    assert m.deliver_message(msg("c1", 6)) == []  # the fill will cover it
    page = [msg("c1", 3), msg("c1", 4, sender=ME, device=PHONE), msg("c1", 5)]
    # 6 arrived during the fill: one more page is read
    assert m.filled("c1", page, page_full=False) == [
        sm.Deliver(msg("c1", 3), paced=True), sm.Deliver(msg("c1", 5), paced=True),
        sm.Fill("c1", 5)]
    assert m.filled("c1", [msg("c1", 6)], page_full=False) == [
        sm.Deliver(msg("c1", 6), paced=True)]
    assert m.deliver_message(msg("c1", 7)) == [sm.Deliver(msg("c1", 7))]


def test_own_message_is_not_echoed_to_the_sending_device():
    m = opened()
    mine = msg("c1", 1, sender=ME, device=PHONE)
    assert m.deliver_message(mine) == []
    other_device = msg("c1", 2, sender=ME, device=LAPTOP)
    assert m.deliver_message(other_device) == [sm.Deliver(other_device)]


def test_own_message_moved_by_a_failover_reaches_the_sending_device_too():
    m = opened({"c1": 2})
    mine = msg("c1", 3, sender=ME, device=PHONE)
    assert m.deliver_message(mine) == []  # it got `sent` seq 3
    # after the heal, seq 3 moved to the new epoch: the device learns its new seq
    new_epoch = 1 << 40
    moved = dataclasses.replace(msg("c1", new_epoch + 1, prev=2, sender=ME, device=PHONE),
                                moved_from=3)
    assert m.deliver_message(moved) == [sm.Fill("c1", 3)]  # prev below what it has
    assert m.filled("c1", [moved], page_full=False) == [sm.Deliver(moved, paced=True)]
    assert sm.msg_frame(moved)["moved_from"] == 3


def test_a_full_page_asks_for_the_next_and_a_failed_fill_can_restart():
    m = opened()
    assert m.resume("c1", 3) == [sm.Fill("c1", 0)]
    assert m.filled("c1", [msg("c1", 1)], page_full=True)[-1] == sm.Fill("c1", 1)
    m.fill_failed("c1")
    assert m.deliver_message(msg("c1", 3)) == [sm.Fill("c1", 1)]


# -- sync, create, watch, upload, push, failures ---------------------------------------------


def test_sync_of_one_conversation_reads_one_more_to_tell_more():
    m = opened()
    (auth,) = requests(m.receive_frame(frame(t="sync", id="y", conv="c1", after=2, limit=2),
                                       0.0))
    (read,) = m.authorized(auth, conv())
    assert read == sm.ReadHistory("c1", 2, 2, "y")
    [reply] = m.history(read, "c1", [msg("c1", 3), msg("c1", 4), msg("c1", 5)])
    assert reply.frame["more"] is True and [x["seq"] for x in reply.frame["msgs"]] == [3, 4]  # type: ignore[union-attr]
    [empty] = m.history(read, "c1", [])
    assert empty.frame == {"t": "batch", "conv": "c1", "msgs": [], "more": False, "id": "y"}  # type: ignore[union-attr]


def test_sync_of_everything_names_only_conversations_with_news():
    m = opened()
    (backlog,) = requests(m.receive_frame(frame(t="sync", id="z"), 0.0))
    assert backlog == sm.ReadBacklog(f.DEFAULT_SYNC_LIMIT, "z")
    assert m.history(backlog, "c1", []) == []
    assert only_reply(m.history(backlog, "c2", [msg("c2", 1)]))["conv"] == "c2"
    assert m.synced(backlog) == [sm.Reply({"t": "synced", "id": "z"})]


def test_create_adds_the_creator_and_refuses_a_clash():
    m = opened()
    (create,) = requests(m.receive_frame(frame(t="create", id="n", members=["zed", "bob"],
                                               conv="room", title="T"), 0.0))
    assert isinstance(create, sm.CreateConversation)
    assert create.members == ("alice", "bob", "zed") and create.home == "eu"
    stored = Conversation("room", ("alice", "bob", "zed"), "eu", "T", 7)
    assert m.created(create, stored) == [sm.Reply(
        {"t": "created", "conv": "room", "members": ["alice", "bob", "zed"], "home": "eu",
         "title": "T", "id": "n"})]
    [clash] = m.created(create, Conversation("room", ("bob", "mallory"), "eu"))
    assert clash.frame["code"] == errors.FORBIDDEN  # type: ignore[union-attr]
    (anon,) = requests(m.receive_frame(frame(t="create", members=[]), 0.0))
    assert isinstance(anon, sm.CreateConversation) and len(anon.conv) == 32


def test_watch_push_register_and_upload():
    m = opened()
    (watch,) = requests(m.receive_frame(frame(t="watch", id="w", users=["bob"]), 0.0))
    assert m.watched(watch, [PresenceState("bob", True, 1.0)]) == [sm.Reply(
        {"t": "presence", "user": "bob", "state": "online", "last_active": 1000, "id": "w"})]
    push = requests(m.receive_frame(frame(t="push_register", id="p", platform="fcm",
                                          token="abc"), 0.0))
    # ok only after the token is stored: the shell drops the rest of a list that fails
    assert push == [sm.RegisterPush("fcm", "abc", "p"), sm.Reply({"t": "ok", "id": "p"})]
    gone = requests(m.receive_frame(frame(t="push_unregister", id="q"), 0.0))
    # likewise ok only once the token is gone
    assert gone == [sm.UnregisterPush("q"), sm.Reply({"t": "ok", "id": "q"})]
    (upload,) = requests(m.receive_frame(frame(t="upload", id="u", kind="image",
                                               content_type="image/png", size=9), 0.0))
    assert m.upload_slot(upload, None)[0].frame["code"] == errors.UNAVAILABLE  # type: ignore[union-attr]
    assert m.upload_slot(upload, {"t": "upload_url"}) == [
        sm.Reply({"t": "upload_url", "id": "u"})]


def test_a_failed_request_is_an_error_reply_and_the_session_stays_open():
    m = opened()
    assert m.failed("a", retryable=True) == [
        sm.error(errors.UNAVAILABLE, "temporarily unavailable; retry", "a")]
    assert m.failed(None, retryable=False) == [sm.error(errors.INTERNAL, "internal error")]
    assert not m.closing


# -- property: whatever the device sends, the machine answers with well-formed frames --------

SERVER_TYPES = {"hello", "pong", "error", "sent", "batch", "synced", "created", "presence",
                "ok", "receipt", "read_sync", "typing", "msg", "upload_url"}
ERROR_CODES = {errors.BAD_FRAME, errors.TOO_LARGE, errors.UNAUTHORIZED, errors.FORBIDDEN,
               errors.NOT_FOUND, errors.RATE_LIMITED, errors.UNAVAILABLE, errors.INTERNAL}
TYPES = ["send", "ack", "read", "ping", "sync", "create", "watch", "typing", "push_register",
         "push_unregister", "upload", "bogus"]
scalars = st.none() | st.booleans() | st.integers(-5, 2**64) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
field_values = {
    "conv": st.sampled_from(["c1", "c2", "nope"]) | scalars, "seq": st.integers(-1, 9) | scalars,
    "cid": st.text(max_size=70) | scalars, "kind": st.sampled_from(["text", "image"]) | scalars,
    "body": st.text(max_size=30) | scalars, "id": st.text(max_size=140) | scalars,
    "media": st.none() | json_values, "members": st.lists(st.text(max_size=4)) | scalars,
    "users": st.lists(st.text(max_size=4)) | scalars, "after": st.integers(-1, 9) | scalars,
    "limit": st.integers(0, 1001) | scalars, "platform": st.sampled_from(["fcm", "x"]),
    "token": st.text(max_size=10), "size": st.integers(-1, 10) | scalars,
    "content_type": st.text(max_size=10), "title": st.text(max_size=5) | scalars,
}
structured = st.builds(
    lambda t, fields: json.dumps({"t": t, **fields}),
    st.sampled_from(TYPES) | scalars,
    st.fixed_dictionaries({}, optional=field_values))  # type: ignore[arg-type]
raw = st.text(max_size=60) | st.binary(max_size=30) | json_values.map(json.dumps)
STORE = {c: [msg(c, s) for s in range(1, 6)] for c in ("c1", "c2")}
CONVS = {"c1": conv(cid="c1"), "c2": conv(("bob", "carol"), "c2")}
events = st.one_of(
    st.builds(lambda c, s: ("event", STORE[c][s - 1]), st.sampled_from(["c1", "c2"]),
              st.integers(1, 5)),
    st.builds(lambda u, k, d: ("event", Receipt("c1", u, k, 3, d)),
              st.sampled_from([ME, "bob"]), st.sampled_from(["read", "delivered"]),
              st.sampled_from([PHONE, LAPTOP])),
    st.just(("event", TypingEvent("c1", "bob"))),
)
inputs = st.lists(st.one_of(structured.map(lambda d: ("frame", d)),
                            raw.map(lambda d: ("frame", d)), events,
                            st.just(("expire", None)), st.just(("close", None))), max_size=25)


def deliver(m: sm.SessionMachine, event: Message | Receipt | TypingEvent) -> list[sm.Action]:
    if isinstance(event, Message):
        return m.deliver_message(event)
    if isinstance(event, Receipt):
        return m.deliver_receipt(event)
    return m.deliver_typing(event)


def answer(m: sm.SessionMachine, action: sm.Action, outcome: int) -> list[sm.Action]:
    """Stand in for the gateway: answer a request as a store or service could."""
    match action:
        case sm.Authorize():
            return m.authorized(action, CONVS.get(action.frame.conv or ""))
        case sm.AttachMedia():
            return m.attached(action, [None, Refusal("forbidden", "no"), {"u": 1}][outcome % 3])
        case sm.Submit():
            if outcome % 3 == 0:
                return m.sent(action, msg(action.conv, 6, sender=ME, device=PHONE))
            return m.not_sent(action, retryable=outcome % 3 == 1, detail="away")
        case sm.ReadHistory():
            return m.history(action, action.conv, STORE.get(action.conv, [])[action.after:])
        case sm.ReadBacklog():
            return [*m.history(action, "c1", STORE["c1"]), *m.synced(action)]
        case sm.CreateConversation():
            stored = Conversation(action.conv, action.members, action.home, action.title)
            return m.created(action, stored if outcome % 2 else conv())
        case sm.WatchPresence():
            return m.watched(action, [PresenceState(u, True, 1.0) for u in action.users])
        case sm.RequestUpload():
            return m.upload_slot(action, None if outcome % 2 else {"t": "upload_url"})
        case sm.Fill():
            page = [x for x in STORE[action.conv] if x.seq > action.after]
            return m.filled(action.conv, page, page_full=False)
    if outcome % 7 == 0 and not isinstance(action, sm.Reply | sm.Deliver | sm.Close):
        return m.failed(getattr(action, "id", None), retryable=outcome % 2 == 0)
    return []


@PROPS
@given(inputs, st.integers(0, 100))
def test_any_input_sequence_gives_well_formed_frames_and_in_order_delivery(steps, outcome):
    m = machine(rate=5.0, burst=10, strikes=3)
    pending: list[sm.Action] = list(m.opened({"c1": 1}))
    delivered: dict[str, list[int]] = {}
    closed_at: int | None = None
    now = 0.0
    for i, (kind, value) in enumerate(steps):
        now += 0.05
        if kind == "frame":
            pending.extend(m.receive_frame(value, now))
        elif kind == "event":
            pending.extend(deliver(m, value))
        elif kind == "expire":
            pending.extend(m.expire())
        else:
            pending.extend(m.close(errors.CLOSE_GOING_AWAY, "bye"))
        while pending:
            action = pending.pop(0)
            if closed_at is not None:
                # after a close the machine starts nothing new (a fill in flight just ends)
                assert not isinstance(action, sm.Reply | sm.Deliver | sm.Close), action
            if isinstance(action, sm.Reply):
                check_frame(action.frame)
            elif isinstance(action, sm.Deliver):
                check_frame(sm.msg_frame(action.msg))
                delivered.setdefault(action.msg.conv, []).append(action.msg.seq)
            elif isinstance(action, sm.Close):
                assert closed_at is None and m.closing
                closed_at = i
            pending.extend(answer(m, action, outcome + i))
    for c, seqs in delivered.items():
        # in order, no duplicates, never what was acked before the connection opened
        assert seqs == sorted(set(seqs)) and min(seqs) > (1 if c == "c1" else 0)


def check_frame(frame: dict[str, Any]) -> None:
    assert isinstance(frame, dict) and frame["t"] in SERVER_TYPES
    json.dumps(frame)  # encodable as the gateway encodes it
    if "id" in frame:
        assert isinstance(frame["id"], str) and len(frame["id"]) <= f.MAX_ID_LEN
    if frame["t"] == "error":
        assert frame["code"] in ERROR_CODES and isinstance(frame["message"], str)
