"""The records on the cluster's Kafka topics and Redis channels: typed envelopes over JSON.

`msg.ingress` (keyed by conversation) carries what gateways ask the sequencer
for: sends (`SendRequest`), acks and reads (`MarkRequest`). `msg.events`
(keyed by conversation) carries what the sequencer decided: messages
(`MessageRecord`), duplicates answered with the original seq
(`DuplicateRecord`), receipts (`ReceiptRecord`) and typing (`TypingRecord`).
A gateway's channel carries an `EventsBatch` (those events with the users they
are for; a duplicate travels as a `DuplicateAnswer` holding the original
message), a `PresenceChange` or a `WatchReply`; `presence.in` carries the
gateways' `PresenceReport`s, and `presence.events` each region's
`PresenceFlip`s.

Every envelope is a frozen dataclass with `encode() -> bytes` and one
classmethod `decode(raw) -> Self`, which raises `ValueError` (and nothing
else) with a message naming the record and the field for anything it would
not accept. The limits are the client protocol's (`runtime.core.frames`): a
record holds only what a client frame could have carried. The wire format is
the JSON these records always had (same field names, same order, optional
fields still optional), so records written by an older version decode, and an
older version decodes what this one writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Self, TypeAlias

from runtime.core import jsontext
from runtime.core.frames import (
    KINDS,
    MAX_CID_LEN,
    MAX_CONV_LEN,
    MAX_DEVICE_LEN,
    MAX_ID_LEN,
    MAX_MEMBERS,
    MAX_SEQ,
    MAX_USER_LEN,
    MAX_WATCH,
)
from runtime.core.presence import PresenceState
from runtime.core.watermarks import MarkOp
from runtime.ports import Event, Message, Receipt, Send, TypingEvent

# Gateway ids and region names come from the topology, which does not bound them the
# way the protocol bounds client ids: the sequencer's historic limit stays.
MAX_ROUTE_LEN = 256
# A body's size limit is the topology's (`limits.max_body_bytes`, 16 KiB by default,
# tunable per deployment and not known to the sequencer): records keep the cluster's
# historic ceiling of 1 Mi characters, so no body a gateway accepted is refused later.
MAX_RECORD_BODY = 1 << 20
MARK_KINDS = frozenset({"ack", "read"})
RECEIPT_KINDS = frozenset({"delivered", "read"})
PRESENCE_STATES = frozenset({"online", "offline"})
PRESENCE_OPS = frozenset({"connect", "heartbeat", "disconnect", "watch"})


# what a Kafka record or Redis message holds (None: a Kafka tombstone, refused like garbage)
Raw: TypeAlias = bytes | bytearray | str | None


def dumps(obj: Any) -> bytes:
    """Compact JSON, as every record on the cluster's topics and channels is written."""
    return jsontext.dumps(obj)


def loads(raw: Raw) -> dict[str, Any]:
    """The JSON object in `raw`; ValueError for anything else (never another exception)."""
    if raw is None:
        raise ValueError("record has no value (a tombstone)")
    try:
        obj = jsontext.loads(raw)
    except RecursionError:
        raise ValueError("record is nested too deeply") from None
    except TypeError:
        raise ValueError(f"record must be bytes or text, not {type(raw).__name__}") from None
    except ValueError as exc:  # not JSON, not UTF-8, nested too deeply
        raise ValueError(f"record is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("record is not a JSON object")
    return obj


class _Fields:
    """Typed access to one JSON object; every refusal is a ValueError naming `what`."""

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            raise ValueError(f"{what}: must be a JSON object")
        self.obj: dict[str, Any] = obj
        self.what = what

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.what}: {message}")

    def expect_type(self, expected: str) -> None:
        if self.obj.get("t") != expected:
            raise self.fail(f"field 't' must be {expected!r}, not {self.obj.get('t')!r}")

    def string(self, name: str, max_len: int, *, min_len: int = 1,
               required: bool = True) -> str | None:
        value = self.obj.get(name)
        if value is None:
            if required:
                raise self.fail(f"missing field '{name}'")
            return None
        return self.check_string(value, f"field '{name}'", min_len, max_len)

    def text(self, name: str, max_len: int, *, min_len: int = 1) -> str:
        value = self.string(name, max_len, min_len=min_len)
        assert value is not None
        return value

    def check_string(self, value: Any, label: str, min_len: int, max_len: int) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{label} must be a string")
        if not min_len <= len(value) <= max_len:
            raise self.fail(f"{label} must be {min_len}-{max_len} characters")
        try:  # json.loads accepts lone surrogates; they cannot be stored or relayed
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(f"{label} is not valid UTF-8") from None
        return value

    def choice(self, name: str, allowed: frozenset[str]) -> str:
        value = self.obj.get(name)
        if value is None:
            raise self.fail(f"missing field '{name}'")
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(f"field '{name}' must be one of {', '.join(sorted(allowed))}")
        return value

    def integer(self, name: str, *, lo: int = 0, hi: int = MAX_SEQ,
                required: bool = True) -> int | None:
        value = self.obj.get(name)
        if value is None:
            if required:
                raise self.fail(f"missing field '{name}'")
            return None
        # bool is an int subclass; a JSON true is not a number here
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"field '{name}' must be an integer")
        if not lo <= value <= hi:
            raise self.fail(f"field '{name}' must be between {lo} and {hi}")
        return value

    def number(self, name: str, *, lo: int = 0, hi: int = MAX_SEQ) -> int:
        value = self.integer(name, lo=lo, hi=hi)
        assert value is not None
        return value

    def boolean(self, name: str) -> bool:
        value = self.obj.get(name)
        if not isinstance(value, bool):
            raise self.fail(f"field '{name}' must be true or false")
        return value

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self.obj.get(name)
        if value is not None and not isinstance(value, dict):
            raise self.fail(f"field '{name}' must be an object or null")
        return value

    def items(self, name: str, *, max_items: int | None = None,
              required: bool = True) -> list[Any]:
        value = self.obj.get(name)
        if value is None:
            if required:
                raise self.fail(f"missing field '{name}'")
            return []
        if not isinstance(value, list):
            raise self.fail(f"field '{name}' must be a list")
        if max_items is not None and len(value) > max_items:
            raise self.fail(f"field '{name}' has more than {max_items} entries")
        return value

    def strings(self, name: str, max_len: int, *, max_items: int | None = None,
                required: bool = True) -> tuple[str, ...]:
        return tuple(self.check_string(v, f"an entry of '{name}'", 1, max_len)
                     for v in self.items(name, max_items=max_items, required=required))

    def body(self, name: str = "body") -> str:
        value = self.obj.get(name)
        if not isinstance(value, str):
            raise self.fail(f"field '{name}' must be a string")
        return self.check_string(value, f"field '{name}'", 0, MAX_RECORD_BODY)


def _with_route(d: dict[str, Any], rg: str) -> dict[str, Any]:
    """`d` with the sender's region, when it names one."""
    if rg:
        d["rg"] = rg
    return d


def _route(f: _Fields, *, gw_required: bool = True) -> tuple[str, str]:
    gw = f.string("gw", MAX_ROUTE_LEN, required=gw_required) or ""
    # absent in records of older gateways; present means a named region
    rg = f.string("rg", MAX_ROUTE_LEN, required=False) or ""
    return gw, rg


class _Envelope:
    """`decode` of one record type: the JSON object, then `from_obj`."""

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        """The record in an already parsed JSON value; ValueError if it is not one."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """The record's bytes."""
        raise NotImplementedError

    @classmethod
    def decode(cls, raw: Raw) -> Self:
        """The record in `raw`; ValueError (with the reason) for anything else."""
        return cls.from_obj(loads(raw))


# -- msg.ingress ---------------------------------------------------------------------


@dataclass(frozen=True)
class SendRequest(_Envelope):
    """A send for the sequencer; `gw` (and `rg`, when set) say where the sender waits for
    its `sent` (the region differs from the sequencer's when the conversation is homed
    elsewhere)."""

    T: ClassVar[str] = "send"
    send: Send
    gw: str
    rg: str = ""

    def to_obj(self) -> dict[str, Any]:
        """The JSON object of the record."""
        s = self.send
        d = {"t": "send", "conv": s.conv, "cid": s.cid, "from": s.sender,
             "from_device": s.device, "kind": s.kind, "body": s.body, "media": s.media,
             "gw": self.gw, "ts": s.ts}
        if s.moved_from is not None:
            d["moved_from"] = s.moved_from
        return _with_route(d, self.rg)

    def encode(self) -> bytes:
        """The record's bytes."""
        return dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "send request")
        f.expect_type(cls.T)
        conv = f.text("conv", MAX_CONV_LEN)
        cid = f.text("cid", MAX_CID_LEN)
        sender = f.text("from", MAX_USER_LEN)
        device = f.text("from_device", MAX_DEVICE_LEN)
        kind = f.choice("kind", KINDS)
        body = f.body()
        media = f.mapping("media")
        gw, rg = _route(f)
        # older gateways did not stamp the send: it is taken now, as it always was
        ts = f.integer("ts", required=False) or int(time.time() * 1000)
        moved_from = f.integer("moved_from", lo=1, required=False)
        return cls(Send(conv, cid, sender, device, kind, body, media, ts, moved_from), gw, rg)


@dataclass(frozen=True)
class MarkRequest(_Envelope):
    """An ack (`kind` "ack") or read of one device, for the sequencer's watermarks."""

    kind: str
    conv: str
    user: str
    device: str
    seq: int

    def to_obj(self) -> dict[str, Any]:
        """The JSON object of the record."""
        return {"t": self.kind, "conv": self.conv, "user": self.user, "device": self.device,
                "seq": self.seq}

    def encode(self) -> bytes:
        """The record's bytes."""
        return dumps(self.to_obj())

    @property
    def op(self) -> MarkOp:
        """The operation the sequencing kernel applies."""
        return MarkOp(self.kind, self.conv, self.user, self.device, self.seq)

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "mark request")
        kind = f.choice("t", MARK_KINDS)
        conv = f.text("conv", MAX_CONV_LEN)
        user = f.text("user", MAX_USER_LEN)
        # records of older gateways carry no device
        device = f.string("device", MAX_DEVICE_LEN, min_len=0, required=False) or ""
        return cls(kind, conv, user, device, f.number("seq"))


@dataclass(frozen=True)
class HomeChange(_Envelope):
    """A conversation's new epoch, in band with its sends (`msgctl region ...`): the
    sequencer homing it adopts the epoch (once `base` is known), any other is fenced
    from that record on and answers with its last seq (`runtime.core.homes`)."""

    T: ClassVar[str] = "home"
    conv: str
    epoch: int
    home: str
    base: int | None = None

    def to_obj(self) -> dict[str, Any]:
        """The JSON object of the record."""
        return {"t": "home", "conv": self.conv, "epoch": self.epoch, "home": self.home,
                "base": self.base}

    def encode(self) -> bytes:
        """The record's bytes."""
        return dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "home change")
        f.expect_type(cls.T)
        return cls(f.text("conv", MAX_CONV_LEN), f.number("epoch", lo=1, hi=(1 << 23) - 1),
                   f.text("home", MAX_ROUTE_LEN), f.integer("base", required=False))


IngressRecord: TypeAlias = SendRequest | MarkRequest | HomeChange


def decode_ingress(raw: Raw) -> IngressRecord:
    """The request in one `msg.ingress` record; ValueError for anything else."""
    obj = loads(raw)
    kind = obj.get("t")
    if kind == SendRequest.T:
        return SendRequest.from_obj(obj)
    if kind == HomeChange.T:
        return HomeChange.from_obj(obj)
    if isinstance(kind, str) and kind in MARK_KINDS:
        return MarkRequest.from_obj(obj)
    raise ValueError(f"ingress record: unknown type {kind!r}")


# -- msg.events ----------------------------------------------------------------------


def message_from_obj(obj: Any, what: str = "message") -> Message:
    """The message in its wire object (`Message.to_wire`); ValueError for anything else."""
    f = _Fields(obj, what)
    return Message(
        conv=f.text("conv", MAX_CONV_LEN), seq=f.number("seq", lo=1), prev=f.number("prev"),
        mid=f.text("mid", MAX_ID_LEN), cid=f.text("cid", MAX_CID_LEN),
        sender=f.text("from", MAX_USER_LEN), from_device=f.text("from_device", MAX_DEVICE_LEN),
        ts=f.number("ts"), kind=f.choice("kind", KINDS), body=f.body(),
        media=f.mapping("media"), moved_from=f.integer("moved_from", lo=1, required=False))


class _Encoded:
    """`encode` computed once per record, however many gateways it goes to."""

    def to_obj(self) -> dict[str, Any]:
        """The JSON object of the record."""
        raise NotImplementedError

    @cached_property
    def _bytes(self) -> bytes:
        return dumps(self.to_obj())

    def encode(self) -> bytes:
        """The record's bytes (computed on the first call)."""
        return self._bytes


@dataclass(frozen=True)
class MessageRecord(_Encoded, _Envelope):
    """A sequenced, durable message; `gw`/`rg` name the gateway waiting for its `sent`."""

    T: ClassVar[str] = "msg"
    message: Message
    gw: str = ""
    rg: str = ""

    def to_obj(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": "msg", "m": self.message.to_wire()}
        if self.gw:  # always set by the sequencer; absent only in a record that lacked it
            d["gw"] = self.gw
        return _with_route(d, self.rg)

    def port_event(self) -> Event:
        """The event the gateways and push handle."""
        return self.message

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "message event")
        f.expect_type(cls.T)
        if "m" not in f.obj:
            raise f.fail("missing field 'm'")
        message = message_from_obj(f.obj["m"], "message event: field 'm'")
        gw, rg = _route(f, gw_required=False)
        return cls(message, gw, rg)


@dataclass(frozen=True)
class DuplicateRecord(_Encoded, _Envelope):
    """A send the sequencer had already taken: its original seq and prev, for its sender."""

    T: ClassVar[str] = "dup"
    conv: str
    sender: str
    cid: str
    seq: int
    prev: int
    gw: str
    rg: str = ""

    def to_obj(self) -> dict[str, Any]:
        return _with_route({"t": "dup", "conv": self.conv, "from": self.sender,
                            "cid": self.cid, "seq": self.seq, "prev": self.prev,
                            "gw": self.gw}, self.rg)

    def port_event(self) -> Event | None:
        """None: a duplicate is an answer to its sender, not an event for anyone."""
        return None

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "duplicate event")
        f.expect_type(cls.T)
        conv, sender, cid = (f.text("conv", MAX_CONV_LEN), f.text("from", MAX_USER_LEN),
                             f.text("cid", MAX_CID_LEN))
        seq, prev = f.number("seq", lo=1), f.number("prev")
        gw, rg = _route(f)
        return cls(conv, sender, cid, seq, prev, gw, rg)


@dataclass(frozen=True)
class ReceiptRecord(_Encoded, _Envelope):
    """A moved watermark: the receipt, and the user's whole watermark after it."""

    T: ClassVar[str] = "receipt"
    receipt: Receipt
    delivered: int
    read: int

    def to_obj(self) -> dict[str, Any]:
        r = self.receipt
        return {"t": "receipt", "conv": r.conv, "user": r.user, "kind": r.kind, "seq": r.seq,
                "device": r.device, "delivered": self.delivered, "read": self.read}

    def port_event(self) -> Event:
        """The event the gateways and push handle."""
        return self.receipt

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "receipt event")
        f.expect_type(cls.T)
        conv, user = f.text("conv", MAX_CONV_LEN), f.text("user", MAX_USER_LEN)
        kind, seq = f.choice("kind", RECEIPT_KINDS), f.number("seq")
        device = f.string("device", MAX_DEVICE_LEN, min_len=0, required=False) or ""
        return cls(Receipt(conv, user, kind, seq, device), f.number("delivered"),
                   f.number("read"))


@dataclass(frozen=True)
class TypingRecord(_Encoded, _Envelope):
    """A member typing in a conversation (published by the gateway, not sequenced)."""

    T: ClassVar[str] = "typing"
    event: TypingEvent

    def to_obj(self) -> dict[str, Any]:
        return {"t": "typing", "conv": self.event.conv, "user": self.event.user}

    def port_event(self) -> Event:
        """The event the gateways and push handle."""
        return self.event

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "typing event")
        f.expect_type(cls.T)
        return cls(TypingEvent(f.text("conv", MAX_CONV_LEN), f.text("user", MAX_USER_LEN)))


EventRecord: TypeAlias = MessageRecord | DuplicateRecord | ReceiptRecord | TypingRecord
_EVENTS: dict[str, type[MessageRecord | DuplicateRecord | ReceiptRecord | TypingRecord]] = {
    c.T: c for c in (MessageRecord, DuplicateRecord, ReceiptRecord, TypingRecord)}


def event_from_obj(obj: Any) -> EventRecord:
    """The event in a parsed `msg.events` record; ValueError for anything else."""
    kind = obj.get("t") if isinstance(obj, dict) else None
    decoder = _EVENTS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise ValueError(f"event record: unknown type {kind!r}")
    return decoder.from_obj(obj)


def decode_event(raw: Raw) -> EventRecord:
    """The event in one `msg.events` record; ValueError for anything else."""
    return event_from_obj(loads(raw))


# -- gateway channels ----------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateAnswer(_Encoded, _Envelope):
    """A duplicate as its sender's gateway gets it: with the original message (the stored
    copy), whose seq, prev and ts the `sent` frame repeats."""

    T: ClassVar[str] = "dup"
    original: Message

    def to_obj(self) -> dict[str, Any]:
        m = self.original
        return {"t": "dup", "conv": m.conv, "from": m.sender, "cid": m.cid, "seq": m.seq,
                "prev": m.prev, "m": m.to_wire()}

    def port_event(self) -> Event | None:
        """None: only the waiting send is answered."""
        return None

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "duplicate answer")
        f.expect_type(cls.T)
        dup = (f.text("conv", MAX_CONV_LEN), f.text("from", MAX_USER_LEN),
               f.text("cid", MAX_CID_LEN), f.number("seq", lo=1), f.number("prev"))
        if "m" not in f.obj:
            raise f.fail("missing field 'm' (the original message)")
        m = message_from_obj(f.obj["m"], "duplicate answer: field 'm'")
        if (m.conv, m.sender, m.cid, m.seq, m.prev) != dup:
            raise f.fail("field 'm' is not the message the duplicate names")
        return cls(m)


RoutedPayload: TypeAlias = MessageRecord | ReceiptRecord | TypingRecord | DuplicateAnswer
_ROUTED: dict[str, type[MessageRecord | ReceiptRecord | TypingRecord | DuplicateAnswer]] = {
    c.T: c for c in (MessageRecord, ReceiptRecord, TypingRecord, DuplicateAnswer)}


@dataclass(frozen=True)
class RoutedEvent:
    """One event in a gateway's batch, with the users (members) on that gateway it is for."""

    event: RoutedPayload
    users: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """`{"e": <event>, "users": [...]}`; the event's own bytes are reused."""
        return b'{"e":' + self.event.encode() + b',"users":' + dumps(list(self.users)) + b"}"

    @classmethod
    def from_obj(cls, obj: Any) -> RoutedEvent:
        """The item in a parsed batch entry; ValueError for anything else."""
        f = _Fields(obj, "routed event")
        e = f.obj.get("e")
        kind = e.get("t") if isinstance(e, dict) else None
        decoder = _ROUTED.get(kind) if isinstance(kind, str) else None
        if decoder is None:
            raise f.fail(f"field 'e' is not an event of a known type ({kind!r})")
        users = f.strings("users", MAX_USER_LEN, max_items=MAX_MEMBERS, required=False)
        return cls(decoder.from_obj(e), users)


@dataclass(frozen=True)
class EventsBatch(_Envelope):
    """What the router publishes to one gateway for one batch of events.

    A malformed entry costs only itself: `decode` keeps the others and says what was
    wrong with it in `errors` (never encoded).
    """

    T: ClassVar[str] = "events"
    items: tuple[RoutedEvent, ...]
    errors: tuple[str, ...] = field(default=(), compare=False)

    def encode(self) -> bytes:
        """The record's bytes, each event's own encoding spliced in as is."""
        return (b'{"t":"events","events":[' + b",".join(i.encode() for i in self.items)
                + b"]}")

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "events batch")
        f.expect_type(cls.T)
        items: list[RoutedEvent] = []
        errors: list[str] = []
        for n, entry in enumerate(f.items("events")):
            try:
                items.append(RoutedEvent.from_obj(entry))
            except ValueError as exc:
                errors.append(f"entry {n}: {exc}")
        return cls(tuple(items), tuple(errors))


def _state_from_obj(obj: Any, what: str) -> PresenceState:
    f = _Fields(obj, what)
    user = f.text("user", MAX_USER_LEN)
    state = f.choice("state", PRESENCE_STATES)
    return PresenceState(user, state == "online", f.number("last_active") / 1000)


def _state_to_obj(s: PresenceState) -> dict[str, Any]:
    return {"user": s.user, "state": s.state, "last_active": int(s.last_active * 1000)}


@dataclass(frozen=True)
class PresenceChange(_Envelope):
    """A watched user's presence changed; `sessions` are the watchers on that gateway."""

    T: ClassVar[str] = "presence"
    sessions: tuple[str, ...]
    state: PresenceState

    def encode(self) -> bytes:
        """The record's bytes."""
        return dumps({"t": "presence", "sessions": list(self.sessions),
                      "state": _state_to_obj(self.state)})

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "presence change")
        f.expect_type(cls.T)
        sessions = f.strings("sessions", MAX_ID_LEN)
        if "state" not in f.obj:
            raise f.fail("missing field 'state'")
        return cls(sessions, _state_from_obj(f.obj["state"], "presence change: field 'state'"))


@dataclass(frozen=True)
class WatchReply(_Envelope):
    """The presence runtime's answer to a `watch`: the states of the watched users."""

    T: ClassVar[str] = "watch_reply"
    rid: str
    states: tuple[PresenceState, ...]

    def encode(self) -> bytes:
        """The record's bytes."""
        return dumps({"t": "watch_reply", "rid": self.rid,
                      "states": [_state_to_obj(s) for s in self.states]})

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "watch reply")
        f.expect_type(cls.T)
        rid = f.text("rid", MAX_ID_LEN)
        states = tuple(_state_from_obj(s, f"watch reply: entry {n} of 'states'")
                       for n, s in enumerate(f.items("states", max_items=MAX_WATCH)))
        return cls(rid, states)


GatewayRecord: TypeAlias = EventsBatch | PresenceChange | WatchReply
_GATEWAY: dict[str, type[EventsBatch | PresenceChange | WatchReply]] = {
    c.T: c for c in (EventsBatch, PresenceChange, WatchReply)}


def decode_gateway(raw: Raw) -> GatewayRecord:
    """The record in one message on a gateway's channel; ValueError for anything else."""
    obj = loads(raw)
    kind = obj.get("t")
    decoder = _GATEWAY.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise ValueError(f"gateway record: unknown type {kind!r}")
    return decoder.from_obj(obj)


@dataclass(frozen=True)
class PresenceReport(_Envelope):
    """A gateway's report on `presence.in`: a session connected, beat, went, or watches
    `users` (`rid` names the watch awaiting a reply; "" on a resync, which wants none)."""

    op: str
    gw: str
    session: str
    user: str = ""  # every op but watch
    users: tuple[str, ...] = ()  # watch
    rid: str = ""  # watch

    def encode(self) -> bytes:
        """The record's bytes."""
        if self.op == "watch":
            return dumps({"op": "watch", "session": self.session, "users": list(self.users),
                          "rid": self.rid, "gw": self.gw})
        return dumps({"op": self.op, "user": self.user, "session": self.session,
                      "gw": self.gw})

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "presence report")
        op = f.choice("op", PRESENCE_OPS)
        gw, session = f.text("gw", MAX_ROUTE_LEN), f.text("session", MAX_ID_LEN)
        if op == "watch":
            users = f.strings("users", MAX_USER_LEN, max_items=MAX_WATCH)
            rid = f.string("rid", MAX_ID_LEN, min_len=0, required=False) or ""
            return cls(op, gw, session, users=users, rid=rid)
        return cls(op, gw, session, user=f.text("user", MAX_USER_LEN))


# -- presence.events (between regions) -----------------------------------------------


@dataclass(frozen=True)
class PresenceFlip(_Envelope):
    """A user went online or offline in `region` (the newest record per user wins)."""

    state: PresenceState
    region: str = ""

    def encode(self) -> bytes:
        """The record's bytes (json's default separators, as these were always written)."""
        return json.dumps({"user": self.state.user, "online": self.state.online,
                           "region": self.region,
                           "last_active": int(self.state.last_active * 1000)}).encode()

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        f = _Fields(obj, "presence flip")
        user, online = f.text("user", MAX_USER_LEN), f.boolean("online")
        last = f.integer("last_active", required=False) or 0
        region = f.string("region", MAX_ROUTE_LEN, min_len=0, required=False) or ""
        return cls(PresenceState(user, online, last / 1000), region)


# -- the encoders the producers call -------------------------------------------------


def send_request(s: Send, gateway: str, region: str = "") -> bytes:
    """A `msg.ingress` send record."""
    return SendRequest(s, gateway, region).encode()


def mark_request(kind: str, conv: str, user: str, device: str, seq: int) -> bytes:
    """A `msg.ingress` ack or read record."""
    return MarkRequest(kind, conv, user, device, seq).encode()


def message_event(m: Message, gateway: str, region: str = "") -> bytes:
    """A `msg.events` message record."""
    return MessageRecord(m, gateway, region).encode()


def duplicate_event(conv: str, sender: str, cid: str, seq: int, prev: int,
                    gateway: str, region: str = "") -> bytes:
    """A `msg.events` duplicate record."""
    return DuplicateRecord(conv, sender, cid, seq, prev, gateway, region).encode()


def receipt_event(r: Receipt, delivered: int, read: int) -> bytes:
    """A `msg.events` receipt record."""
    return ReceiptRecord(r, delivered, read).encode()


def typing_event(t: TypingEvent) -> bytes:
    """A `msg.typing` record (the routers read it beside `msg.events`)."""
    return TypingRecord(t).encode()
