"""The records on the cluster's Kafka topics and Redis channels, as JSON.

`msg.ingress` (keyed by conversation) carries what gateways ask the sequencer
for: sends, acks and reads. `msg.events` (keyed by conversation) carries what
the sequencer decided: messages, duplicates answered with the original seq,
receipts, typing. Gateway channels carry those events, with the users they are
for, plus presence changes and replies.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.ports import Message, Receipt, TypingEvent


def message_to_dict(m: Message) -> dict[str, Any]:
    return m.to_wire()


def message_from_dict(d: dict[str, Any]) -> Message:
    return Message(d["conv"], int(d["seq"]), int(d["prev"]), d["mid"], d["cid"], d["from"],
                   d["from_device"], int(d["ts"]), d["kind"], d["body"], d.get("media"))


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def loads(raw: bytes | str) -> dict[str, Any]:
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("record is not a JSON object")
    return obj


# -- msg.ingress -------------------------------------------------------------
def send_request(conv: str, cid: str, sender: str, device: str, kind: str, body: str,
                 media: dict[str, Any] | None, gateway: str, ts: int, region: str = "") -> bytes:
    """`gateway` and `region` say where the sender waits for its `sent` (the region
    differs from the sequencer's when the conversation is homed elsewhere)."""
    d = {"t": "send", "conv": conv, "cid": cid, "from": sender, "from_device": device,
         "kind": kind, "body": body, "media": media, "gw": gateway, "ts": ts}
    if region:
        d["rg"] = region
    return dumps(d)


def mark_request(kind: str, conv: str, user: str, device: str, seq: int) -> bytes:
    return dumps({"t": kind, "conv": conv, "user": user, "device": device, "seq": seq})


# -- msg.events ----------------------------------------------------------------
def message_event(m: Message, gateway: str, region: str = "") -> bytes:
    return dumps({"t": "msg", "m": message_to_dict(m), "gw": gateway,
                  **({"rg": region} if region else {})})


def duplicate_event(conv: str, sender: str, cid: str, seq: int, prev: int,
                    gateway: str, region: str = "") -> bytes:
    return dumps({"t": "dup", "conv": conv, "from": sender, "cid": cid, "seq": seq,
                  "prev": prev, "gw": gateway, **({"rg": region} if region else {})})


def receipt_event(r: Receipt, delivered: int, read: int) -> bytes:
    return dumps({"t": "receipt", "conv": r.conv, "user": r.user, "kind": r.kind, "seq": r.seq,
                  "device": r.device, "delivered": delivered, "read": read})


def typing_event(t: TypingEvent) -> bytes:
    return dumps({"t": "typing", "conv": t.conv, "user": t.user})


def event_from_dict(d: dict[str, Any]) -> Message | Receipt | TypingEvent | None:
    """The port event a record stands for (None for records that are not one, like dup)."""
    kind = d.get("t")
    if kind == "msg":
        return message_from_dict(d["m"])
    if kind == "receipt":
        return Receipt(d["conv"], d["user"], d["kind"], int(d["seq"]), d.get("device", ""))
    if kind == "typing":
        return TypingEvent(d["conv"], d["user"])
    return None
