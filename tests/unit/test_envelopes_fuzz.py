"""Fuzz properties of the cluster envelopes: arbitrary bytes or JSON never make `decode`
raise anything but ValueError, and whatever decodes encodes back to a record that
decodes to the same envelope."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.adapters.cluster import envelopes as env
from runtime.core.frames import KINDS, MAX_SEQ
from runtime.ports import Message, Receipt, Send, TypingEvent

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

DECODERS: list[Callable[[bytes | str], Any]] = [
    env.decode_ingress, env.decode_event, env.decode_gateway, env.SendRequest.decode,
    env.MarkRequest.decode, env.MessageRecord.decode, env.DuplicateRecord.decode,
    env.ReceiptRecord.decode, env.TypingRecord.decode, env.DuplicateAnswer.decode,
    env.EventsBatch.decode, env.PresenceChange.decode, env.WatchReply.decode,
    env.PresenceReport.decode, env.PresenceFlip.decode,
]
T_VALUES = ["send", "ack", "read", "msg", "dup", "receipt", "typing", "events", "presence",
            "watch_reply", "connect", "watch", "heartbeat", "disconnect", "online", "offline",
            "delivered"]
FIELDS = ["t", "op", "conv", "cid", "from", "from_device", "kind", "body", "media", "gw", "rg",
          "ts", "user", "device", "seq", "prev", "mid", "m", "delivered", "read", "events", "e",
          "users", "sessions", "state", "states", "rid", "session", "online", "last_active",
          "region"]

# text that includes lone surrogates (category Cs) on purpose
any_text = st.text(alphabet=st.characters(codec=None), max_size=20)
scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.sampled_from([0, 1, -1, MAX_SEQ, MAX_SEQ + 1])
           | st.floats(allow_nan=True, allow_infinity=True)
           | any_text | st.sampled_from(sorted(KINDS) + T_VALUES))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | any_text, children, max_size=8),
    max_leaves=24)


def check(raw: bytes | str) -> None:
    for decode in DECODERS:
        try:
            record = decode(raw)
        except ValueError:
            continue
        # what decodes is a well-formed envelope: it encodes, and decodes to itself
        # (a batch's `errors` are not part of its value, and are never encoded)
        assert type(record).decode(record.encode()) == record


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_value_error(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(json_values)
def test_arbitrary_json_decodes_or_raises_value_error(value: Any) -> None:
    check(json.dumps(value))
    check(json.dumps(value).encode())


def _mutations(record: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid record with fields dropped, or replaced by arbitrary JSON."""
    keys = sorted(record)
    return st.builds(
        lambda drop, replace: {**{k: v for k, v in record.items() if k not in drop},
                               **replace},
        st.sets(st.sampled_from(keys), max_size=3),
        st.dictionaries(st.sampled_from(keys), json_values, max_size=3))


M = Message("c", 2, 1, "m", "x", "a", "d", 5, "text", "hi", {"k": "v"})
VALID = [
    env.SendRequest(Send("c", "x", "a", "d", "text", "hi", None, 5), "g", "r"),
    env.MarkRequest("read", "c", "u", "d", 3),
    env.MessageRecord(M, "g", "r"),
    env.DuplicateRecord("c", "a", "x", 2, 1, "g"),
    env.ReceiptRecord(Receipt("c", "u", "read", 1, "d"), 1, 1),
    env.TypingRecord(TypingEvent("c", "u")),
    env.EventsBatch((env.RoutedEvent(env.MessageRecord(M, "g"), ("u",)),
                     env.RoutedEvent(env.DuplicateAnswer(M)))),
]


@FUZZ
@given(st.sampled_from(VALID).flatmap(lambda r: _mutations(json.loads(r.encode()))))
def test_mutated_records_decode_or_raise_value_error(record: dict[str, Any]) -> None:
    check(json.dumps(record))


@FUZZ
@given(st.sampled_from(VALID).flatmap(
    lambda r: _mutations(json.loads(r.encode())["events"][0]["e"]
                         if isinstance(r, env.EventsBatch) else json.loads(r.encode()))))
def test_mutated_batch_entries_never_break_the_batch(e: dict[str, Any]) -> None:
    good = {"e": {"t": "typing", "conv": "c", "user": "u"}, "users": ["u"]}
    batch = env.EventsBatch.decode(json.dumps({"t": "events", "events": [e, good]}))
    assert batch.items[-1] == env.RoutedEvent(env.TypingRecord(TypingEvent("c", "u")), ("u",))
    assert len(batch.items) + len(batch.errors) == 2
