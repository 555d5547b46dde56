"""Records on the cluster's topics and channels round-trip (runtime.adapters.cluster.envelopes),
and records in the format older versions wrote still decode."""

from __future__ import annotations

import json

import pytest

from runtime.adapters.cluster import envelopes as env
from runtime.core.presence import PresenceState
from runtime.ports import Message, Receipt, Send, TypingEvent

M = Message("c", 7, 6, "mid", "cid", "alice", "phone", 123, "image", "héllo ✓",
            {"key": "k", "url": "https://cdn/x"})
SEND = Send("c", "cid", "alice", "phone", "text", "hi ✓", None, 1_700_000_000_000)


def test_message_event_round_trips_with_media_and_unicode() -> None:
    raw = env.message_event(M, "gateway-2")
    rec = env.loads(raw)
    assert rec["gw"] == "gateway-2" and "rg" not in rec
    decoded = env.decode_event(raw)
    assert decoded == env.MessageRecord(M, "gateway-2") == env.MessageRecord.decode(raw)
    assert decoded.port_event() == M and decoded.encode() == raw


def test_receipt_and_typing_events() -> None:
    r = Receipt("c", "bob", "read", 5, "laptop")
    raw = env.receipt_event(r, 5, 5)
    rec = env.decode_event(raw)
    assert isinstance(rec, env.ReceiptRecord)
    assert rec.port_event() == r and (rec.delivered, rec.read) == (5, 5)
    assert rec.encode() == raw
    typing = env.decode_event(env.typing_event(TypingEvent("c", "bob")))
    assert typing.port_event() == TypingEvent("c", "bob")


def test_duplicates_are_not_port_events() -> None:
    raw = env.duplicate_event("c", "alice", "cid", 3, 2, "gateway-1")
    rec = env.decode_event(raw)
    assert rec == env.DuplicateRecord("c", "alice", "cid", 3, 2, "gateway-1")
    assert rec.port_event() is None and rec.encode() == raw


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b"not json", b"\xff\xfe", b"", b"null"])
def test_non_object_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        env.loads(raw)
    for decode in (env.decode_ingress, env.decode_event, env.decode_gateway,
                   env.PresenceFlip.decode, env.PresenceReport.decode):
        with pytest.raises(ValueError):
            decode(raw)


@pytest.mark.parametrize("rg", ["", "eu-west"])
def test_send_request_round_trips(rg: str) -> None:
    req = env.SendRequest(SEND, "gateway-1", rg)
    assert env.decode_ingress(req.encode()) == req
    assert env.SendRequest.decode(env.send_request(SEND, "gateway-1", rg)) == req
    media = env.SendRequest(Send("c", "x", "a", "d", "image", "", {"k": [1, None]}, 5), "g")
    assert env.SendRequest.decode(media.encode()) == media


def test_mark_requests_round_trip_and_make_mark_ops() -> None:
    for kind in ("ack", "read"):
        raw = env.mark_request(kind, "c", "bob", "laptop", 9)
        req = env.decode_ingress(raw)
        assert req == env.MarkRequest(kind, "c", "bob", "laptop", 9) and req.encode() == raw
        assert isinstance(req, env.MarkRequest)
        assert (req.op.kind, req.op.conv, req.op.user, req.op.device, req.op.seq) == \
            (kind, "c", "bob", "laptop", 9)


def test_duplicate_answer_and_events_batch_round_trip() -> None:
    original = Message("c", 3, 2, "m3", "cid", "alice", "phone", 99, "text", "hi")
    batch = env.EventsBatch((
        env.RoutedEvent(env.MessageRecord(M, "gateway-1", "eu-west"), ("bob", "carol")),
        env.RoutedEvent(env.ReceiptRecord(Receipt("c", "bob", "delivered", 7, "pc"), 7, 3),
                        ("alice",)),
        env.RoutedEvent(env.TypingRecord(TypingEvent("c", "bob")), ("alice",)),
        env.RoutedEvent(env.DuplicateAnswer(original)),
    ))
    raw = batch.encode()
    assert env.decode_gateway(raw) == batch == env.EventsBatch.decode(raw)
    # the spliced encoding is exactly what json.dumps makes of the same structure
    assert raw == env.dumps(json.loads(raw))


def test_presence_change_watch_reply_and_report_round_trip() -> None:
    state = PresenceState("bob", True, 1795963166.437)
    change = env.PresenceChange(("s1", "s2"), state)
    assert env.decode_gateway(change.encode()) == change
    reply = env.WatchReply("ab12", (state, PresenceState("eve", False, 0.0)))
    assert env.decode_gateway(reply.encode()) == reply
    for report in (env.PresenceReport("connect", "gateway-1", "s1", user="bob"),
                   env.PresenceReport("heartbeat", "gateway-1", "s1", user="bob"),
                   env.PresenceReport("disconnect", "gateway-1", "s1", user="bob"),
                   env.PresenceReport("watch", "gateway-1", "s1", users=("a", "b"), rid="r1"),
                   env.PresenceReport("watch", "gateway-1", "s1", users=("a",), rid="")):
        assert env.PresenceReport.decode(report.encode()) == report
    flip = env.PresenceFlip(state, "us-east")
    assert env.PresenceFlip.decode(flip.encode()) == flip


# -- records as older versions wrote them ------------------------------------------


def test_old_send_without_ts_or_rg_decodes_with_the_time_it_is_read() -> None:
    old = (b'{"t":"send","conv":"c","cid":"m1","from":"alice","from_device":"phone",'
           b'"kind":"text","body":"hi","media":null,"gw":"gateway-1"}')
    req = env.SendRequest.decode(old)
    assert (req.send.conv, req.send.cid, req.gw, req.rg) == ("c", "m1", "gateway-1", "")
    assert req.send.ts > 1_600_000_000_000  # stamped when read, as the sequencer always did
    no_media = env.SendRequest.decode(old.replace(b'"media":null,', b""))
    assert no_media.send.media is None


def test_old_mark_and_receipt_without_device_decode() -> None:
    mark = env.decode_ingress(b'{"t":"read","conv":"c","user":"bob","seq":4}')
    assert mark == env.MarkRequest("read", "c", "bob", "", 4)
    rec = env.decode_event(b'{"t":"receipt","conv":"c","user":"bob","kind":"read","seq":4,'
                           b'"delivered":4,"read":4}')
    assert rec.port_event() == Receipt("c", "bob", "read", 4, "")


def test_records_exactly_as_the_previous_version_wrote_them() -> None:
    # byte-for-byte what runtime/adapters/cluster/envelopes.py produced before envelopes,
    # but for text outside ASCII: written as UTF-8 since orjson, where json escaped it
    old_send = (b'{"t":"send","conv":"c","cid":"cid","from":"alice","from_device":"phone",'
                b'"kind":"text","body":"hi \\u2713","media":null,"gw":"gateway-1",'
                b'"ts":1700000000000,"rg":"eu-west"}')
    send = old_send.replace(b"\\u2713", "\u2713".encode())
    assert env.SendRequest(SEND, "gateway-1", "eu-west").encode() == send
    # both read as the same record: a region reads what an older gateway wrote
    assert env.SendRequest.decode(send) == env.SendRequest(SEND, "gateway-1", "eu-west")
    assert env.SendRequest.decode(old_send) == env.SendRequest(SEND, "gateway-1", "eu-west")
    dup = b'{"t":"dup","conv":"c","from":"a","cid":"x","seq":3,"prev":2,"gw":"g","rg":"r"}'
    assert env.DuplicateRecord.decode(dup).encode() == dup
    mark = b'{"t":"ack","conv":"c","user":"u","device":"d","seq":1}'
    assert env.MarkRequest.decode(mark).encode() == mark
    receipt = (b'{"t":"receipt","conv":"c","user":"u","kind":"delivered","seq":1,'
               b'"device":"d","delivered":1,"read":0}')
    assert env.ReceiptRecord.decode(receipt).encode() == receipt
    typing = b'{"t":"typing","conv":"c","user":"u"}'
    assert env.TypingRecord.decode(typing).encode() == typing
    flip = b'{"user": "a", "online": true, "region": "r", "last_active": 1500}'
    assert env.PresenceFlip.decode(flip).encode() == flip


def test_old_flip_without_last_active_or_region_decodes() -> None:
    assert env.PresenceFlip.decode(b'{"user": "a", "online": false}') == \
        env.PresenceFlip(PresenceState("a", False, 0.0))


def test_gateway_records_as_the_router_and_presence_runtime_write_them() -> None:
    m = M.to_wire()
    dup = {"t": "dup", "conv": "c", "from": "alice", "cid": "cid", "seq": 7, "prev": 6, "m": m}
    raw = env.dumps({"t": "events", "events": [
        {"e": {"t": "msg", "m": m, "gw": "gateway-1"}, "users": ["bob"]},
        {"e": dup, "users": []},
        {"e": {"t": "typing", "conv": "c", "user": "bob"}},  # "users" was always optional
    ]})
    batch = env.decode_gateway(raw)
    assert isinstance(batch, env.EventsBatch) and not batch.errors
    assert [type(i.event) for i in batch.items] == [env.MessageRecord, env.DuplicateAnswer,
                                                   env.TypingRecord]
    assert batch.items[1].event == env.DuplicateAnswer(M) and batch.items[2].users == ()
    presence = env.decode_gateway(env.dumps({
        "t": "presence", "sessions": ["s1"],
        "state": {"user": "bob", "state": "offline", "last_active": 1500}}))
    assert presence == env.PresenceChange(("s1",), PresenceState("bob", False, 1.5))
    reply = env.decode_gateway(env.dumps({"t": "watch_reply", "rid": "r", "states": []}))
    assert reply == env.WatchReply("r", ())
    report = env.PresenceReport.decode(env.dumps(
        {"op": "watch", "session": "s", "users": ["a"], "rid": "", "gw": "g"}))
    assert report == env.PresenceReport("watch", "g", "s", users=("a",))


def test_a_bad_entry_in_a_batch_costs_only_itself() -> None:
    good = {"e": {"t": "typing", "conv": "c", "user": "bob"}, "users": ["alice"]}
    raw = env.dumps({"t": "events", "events": [
        {"e": {"t": "typing", "conv": "c"}}, good, 7, {"e": {"t": "nope"}}]})
    batch = env.EventsBatch.decode(raw)
    assert len(batch.items) == 1 and batch.items[0].users == ("alice",)
    assert len(batch.errors) == 3
    assert "entry 0" in batch.errors[0] and "missing field 'user'" in batch.errors[0]


def test_a_duplicate_answer_without_its_original_is_malformed() -> None:
    dup = {"t": "dup", "conv": "c", "from": "alice", "cid": "cid", "seq": 7, "prev": 6}
    with pytest.raises(ValueError, match="missing field 'm'"):
        env.DuplicateAnswer.from_obj(dup)
    with pytest.raises(ValueError, match="not the message the duplicate names"):
        env.DuplicateAnswer.from_obj({**dup, "seq": 8, "m": M.to_wire()})
    for missing in ("conv", "from", "cid", "seq", "prev", "gw"):
        record = {**dup, "gw": "g"}
        del record[missing]
        with pytest.raises(ValueError, match=f"duplicate event: missing field '{missing}'"):
            env.DuplicateRecord.from_obj(record)
