"""Each limit of each envelope refuses with a clear ValueError; the limits are the client
protocol's (runtime.core.frames), so whatever a client frame can carry still passes."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.adapters.cluster import envelopes as env
from runtime.core import frames as fr

MSG = {"conv": "c", "seq": 2, "prev": 1, "mid": "m", "cid": "x", "from": "a",
       "from_device": "d", "ts": 5, "kind": "text", "body": "hi"}
SEND = {"t": "send", "conv": "c", "cid": "x", "from": "a", "from_device": "d", "kind": "text",
        "body": "hi", "media": None, "gw": "g", "ts": 5}
MARK = {"t": "ack", "conv": "c", "user": "u", "device": "d", "seq": 1}
EVENT_MSG = {"t": "msg", "m": MSG, "gw": "g"}
DUP = {"t": "dup", "conv": "c", "from": "a", "cid": "x", "seq": 2, "prev": 1, "gw": "g"}
RECEIPT = {"t": "receipt", "conv": "c", "user": "u", "kind": "read", "seq": 1, "device": "d",
           "delivered": 1, "read": 1}
TYPING = {"t": "typing", "conv": "c", "user": "u"}
STATE = {"user": "u", "state": "online", "last_active": 1}
PRESENCE = {"t": "presence", "sessions": ["s"], "state": STATE}
REPLY = {"t": "watch_reply", "rid": "r", "states": [STATE]}
REPORT = {"op": "connect", "user": "u", "session": "s", "gw": "g"}
FLIP = {"user": "u", "online": True, "region": "r", "last_active": 1}


def decode_send(d: dict[str, Any]) -> object:
    return env.SendRequest.decode(env.dumps(d))


def decode_mark(d: dict[str, Any]) -> object:
    return env.decode_ingress(env.dumps(d))


def decode_event(d: dict[str, Any]) -> object:
    return env.decode_event(env.dumps(d))


def decode_gateway(d: dict[str, Any]) -> object:
    return env.decode_gateway(env.dumps(d))


def decode_report(d: dict[str, Any]) -> object:
    return env.PresenceReport.decode(env.dumps(d))


def decode_flip(d: dict[str, Any]) -> object:
    return env.PresenceFlip.decode(env.dumps(d))


def with_msg(**fields: Any) -> dict[str, Any]:
    return {**EVENT_MSG, "m": {**MSG, **fields}}


LONG_CONV = "c" * (fr.MAX_CONV_LEN + 1)
LONG_CID = "x" * (fr.MAX_CID_LEN + 1)
LONG_USER = "u" * (fr.MAX_USER_LEN + 1)
LONG_DEVICE = "d" * (fr.MAX_DEVICE_LEN + 1)
LONG_ROUTE = "g" * (env.MAX_ROUTE_LEN + 1)
BIG = fr.MAX_SEQ + 1

REFUSED = [
    # send requests: the send frame's limits, plus the routing fields
    (decode_send, {**SEND,
     "conv": LONG_CONV}, f"send request: field 'conv' must be 1-{fr.MAX_CONV_LEN} characters"),
    (decode_send, {**SEND, "conv": ""}, "field 'conv' must be 1-"),
    (decode_send, {**SEND, "cid": LONG_CID}, f"field 'cid' must be 1-{fr.MAX_CID_LEN} characters"),
    (decode_send, {**SEND, "from": LONG_USER}, f"field 'from' must be 1-{fr.MAX_USER_LEN}"),
    (decode_send, {**SEND, "from_device": LONG_DEVICE}, "field 'from_device' must be 1-"),
    (decode_send, {**SEND, "kind": "gif"}, "field 'kind' must be one of audio, file, image"),
    (decode_send, {**SEND, "body": "b" * (env.MAX_RECORD_BODY + 1)},
     f"field 'body' must be 0-{env.MAX_RECORD_BODY} characters"),
    (decode_send, {**SEND, "body": "\ud800"}, "field 'body' is not valid UTF-8"),
    (decode_send, {**SEND, "body": None}, "field 'body' must be a string"),
    (decode_send, {**SEND, "media": [1]}, "field 'media' must be an object or null"),
    (decode_send, {**SEND, "gw": LONG_ROUTE}, f"field 'gw' must be 1-{env.MAX_ROUTE_LEN}"),
    (decode_send, {**SEND, "rg": ""}, "field 'rg' must be 1-"),
    (decode_send, {**SEND, "ts": -1}, f"field 'ts' must be between 0 and {fr.MAX_SEQ}"),
    (decode_send, {**SEND, "ts": BIG}, "field 'ts' must be between"),
    (decode_send, {**SEND, "ts": 1.5}, "field 'ts' must be an integer"),
    (decode_send, {**SEND, "ts": True}, "field 'ts' must be an integer"),
    (decode_send, {k: v for k, v in SEND.items() if k != "gw"}, "missing field 'gw'"),
    (decode_send, {**SEND, "t": "ack"}, "field 't' must be 'send'"),
    # ack/read requests: the ack/read frame's limits
    (decode_mark, {**MARK,
     "seq": BIG}, f"mark request: field 'seq' must be between 0 and {fr.MAX_SEQ}"),
    (decode_mark, {**MARK, "seq": -1}, "field 'seq' must be between"),
    (decode_mark, {**MARK, "seq": "1"}, "field 'seq' must be an integer"),
    (decode_mark, {**MARK, "conv": LONG_CONV}, "field 'conv' must be 1-"),
    (decode_mark, {**MARK, "user": LONG_USER}, "field 'user' must be 1-"),
    (decode_mark, {**MARK, "device": LONG_DEVICE}, "field 'device' must be 0-"),
    (decode_mark, {**MARK, "t": "nack"}, "ingress record: unknown type 'nack'"),
    # message events: the message a send frame could make
    (decode_event, with_msg(seq=0), "message event: field 'm': field 'seq' must be between 1"),
    (decode_event, with_msg(prev=BIG), "field 'prev' must be between 0"),
    (decode_event, with_msg(mid=""), "field 'mid' must be 1-"),
    (decode_event, with_msg(mid="m" * (fr.MAX_ID_LEN + 1)),
     f"field 'mid' must be 1-{fr.MAX_ID_LEN}"),
    (decode_event, with_msg(cid=LONG_CID), "field 'cid' must be 1-"),
    (decode_event, with_msg(kind="x"), "field 'kind' must be one of"),
    (decode_event, with_msg(ts="now"), "field 'ts' must be an integer"),
    (decode_event, with_msg(body=7), "field 'body' must be a string"),
    (decode_event, {**EVENT_MSG, "m": [1]}, "field 'm': must be a JSON object"),
    (decode_event, {"t": "msg"}, "message event: missing field 'm'"),
    (decode_event, {**EVENT_MSG, "gw": ""}, "field 'gw' must be 1-"),
    # duplicates: every field required, nothing made up
    (decode_event, {**DUP, "seq": None}, "duplicate event: missing field 'seq'"),
    (decode_event, {**DUP, "from": 3}, "duplicate event: field 'from' must be a string"),
    (decode_event, {**DUP, "prev": -1}, "field 'prev' must be between 0"),
    # receipts
    (decode_event, {**RECEIPT, "kind": "seen"},
     "receipt event: field 'kind' must be one of delivered, read"),
    (decode_event, {**RECEIPT, "delivered": BIG}, "field 'delivered' must be between"),
    (decode_event, {k: v for k, v in RECEIPT.items() if k != "read"}, "missing field 'read'"),
    # typing
    (decode_event, {**TYPING, "user": LONG_USER}, "typing event: field 'user' must be 1-"),
    (decode_event, {"t": "typed"}, "event record: unknown type 'typed'"),
    # gateway channel
    (decode_gateway, {"t": "events"}, "events batch: missing field 'events'"),
    (decode_gateway, {"t": "events", "events": {}}, "field 'events' must be a list"),
    (decode_gateway, {**PRESENCE, "sessions": [""]},
     "presence change: an entry of 'sessions' must be 1-"),
    (decode_gateway, {**PRESENCE, "state": {**STATE, "state": "away"}},
     "field 'state' must be one of offline, online"),
    (decode_gateway, {**PRESENCE, "state": {**STATE, "last_active": -5}},
     "field 'last_active' must be between 0"),
    (decode_gateway, {**REPLY, "rid": ""}, "watch reply: field 'rid' must be 1-"),
    (decode_gateway, {**REPLY,
     "states": [STATE] * (fr.MAX_WATCH + 1)}, f"more than {fr.MAX_WATCH} entries"),
    (decode_gateway, {**REPLY, "states": [{**STATE, "user": LONG_USER}]},
     "entry 0 of 'states': field 'user' must be 1-"),
    (decode_gateway, {"t": "resync"}, "gateway record: unknown type 'resync'"),
    # presence reports and flips
    (decode_report, {**REPORT, "op": "dance"}, "presence report: field 'op' must be one of"),
    (decode_report, {**REPORT, "user": None}, "presence report: missing field 'user'"),
    (decode_report, {**REPORT, "session": LONG_USER}, "field 'session' must be 1-"),
    (decode_report, {"op": "watch", "session": "s", "gw": "g", "users": ["u"] * (fr.MAX_WATCH + 1)},
     f"field 'users' has more than {fr.MAX_WATCH} entries"),
    (decode_report, {"op": "watch", "session": "s", "gw": "g", "users": [LONG_USER]},
     f"an entry of 'users' must be 1-{fr.MAX_USER_LEN}"),
    (decode_flip, {**FLIP, "online": "yes"}, "presence flip: field 'online' must be true or false"),
    (decode_flip, {**FLIP, "user": LONG_USER}, "presence flip: field 'user' must be 1-"),
]


@pytest.mark.parametrize(("decode", "record", "message"), REFUSED,
                         ids=[f"{n}-{m[:40]}" for n, (_, _, m) in enumerate(REFUSED)])
def test_each_limit_is_refused_with_a_clear_message(decode: Any, record: dict[str, Any],
                                                    message: str) -> None:
    with pytest.raises(ValueError) as info:
        decode(record)
    assert message in str(info.value)


def test_a_batch_entry_over_the_members_limit_is_an_error_of_that_entry() -> None:
    entry = {"e": {"t": "typing", "conv": "c", "user": "u"}, "users": ["u"] * (fr.MAX_MEMBERS + 1)}
    batch = env.EventsBatch.decode(env.dumps({"t": "events", "events": [entry]}))
    assert batch.items == () and f"more than {fr.MAX_MEMBERS} entries" in batch.errors[0]


ACCEPTED = [
    # exactly at each limit: what a client frame may carry passes
    (decode_send, {**SEND, "conv": "c" * fr.MAX_CONV_LEN, "cid": "x" * fr.MAX_CID_LEN,
                   "from": "a" * fr.MAX_USER_LEN, "from_device": "d" * fr.MAX_DEVICE_LEN,
                   "body": "b" * fr.Limits().max_body_bytes, "ts": fr.MAX_SEQ,
                   "gw": "g" * env.MAX_ROUTE_LEN, "rg": "r" * env.MAX_ROUTE_LEN}),
    # a topology may raise limits.max_body_bytes: the record keeps the cluster's ceiling
    (decode_send, {**SEND, "body": "é" * env.MAX_RECORD_BODY}),
    (decode_mark, {**MARK, "seq": fr.MAX_SEQ}),
    (decode_mark, {**MARK, "seq": 0, "device": ""}),
    (decode_event, with_msg(seq=fr.MAX_SEQ, prev=fr.MAX_SEQ - 1, kind="file", media={"k": 1})),
    (decode_event, {**RECEIPT, "seq": fr.MAX_SEQ, "read": fr.MAX_SEQ}),
]


@pytest.mark.parametrize(("decode", "record"), ACCEPTED)
def test_records_at_the_limits_are_accepted(decode: Any, record: dict[str, Any]) -> None:
    decode(record)


def test_every_kind_a_client_may_send_is_accepted() -> None:
    for kind in fr.KINDS:
        assert env.SendRequest.decode(env.dumps({**SEND, "kind": kind})).send.kind == kind
