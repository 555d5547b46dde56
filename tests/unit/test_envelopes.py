"""Records on the cluster's topics and channels round-trip (runtime.adapters.cluster.envelopes)."""

from __future__ import annotations

import pytest

from runtime.adapters.cluster import envelopes as env
from runtime.ports import Message, Receipt, TypingEvent


def test_message_event_round_trips_with_media_and_unicode() -> None:
    m = Message("c", 7, 6, "mid", "cid", "alice", "phone", 123, "image", "héllo ✓",
                {"key": "k", "url": "https://cdn/x"})
    rec = env.loads(env.message_event(m, "gateway-2"))
    assert rec["gw"] == "gateway-2"
    assert env.event_from_dict(rec) == m


def test_receipt_and_typing_events() -> None:
    r = Receipt("c", "bob", "read", 5, "laptop")
    rec = env.loads(env.receipt_event(r, 5, 5))
    assert env.event_from_dict(rec) == r and (rec["delivered"], rec["read"]) == (5, 5)
    assert env.event_from_dict(env.loads(env.typing_event(TypingEvent("c", "bob")))) == \
        TypingEvent("c", "bob")


def test_duplicates_are_not_port_events() -> None:
    rec = env.loads(env.duplicate_event("c", "alice", "cid", 3, 2, "gateway-1"))
    assert env.event_from_dict(rec) is None and rec["seq"] == 3


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b"not json"])
def test_non_object_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        env.loads(raw)
