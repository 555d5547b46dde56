"""One device session of protocol v1 as a sans-I/O state machine.

In the manner of python-websockets' `protocol.py`: the gateway feeds it what
happened — a client frame, a routed event, the result of a lookup it asked
for — and it answers with a list of actions for the gateway to carry out, in
order. It never touches a socket, a store, a clock or the event loop, so every
rule of a session can be tested by calling methods and reading the actions.

The machine owns: the hello handshake and resume, the closing state (a closing
session takes no frames and sends nothing new), per-session rate limiting
(`runtime.core.ratelimit`), parsing (`runtime.core.frames`), membership rules,
the per-conversation delivery order (`runtime.core.delivery`), receipts versus
`read_sync`, token expiry and the exact reply and error frames.

The gateway owns what is I/O: reading the store and the services the machine
asks for (`Authorize`, `ReadHistory`, `Submit`, ...), building the records of
`runtime.ports` and stamping their wall-clock times, the outgoing queue and its
byte bound (a slow consumer), keepalive pings. An action that does I/O may
fail; the gateway then drops the rest of that list and reports it to `failed`.
Like all of `runtime.core`, it imports nothing with I/O: only the core and the
records of `runtime.ports`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.core import frames as f
from runtime.core import paging
from runtime.core.delivery import ConvStream, Entry, Offer
from runtime.core.errors import (
    CLOSE_POLICY,
    FORBIDDEN,
    INTERNAL,
    LIMIT_EXCEEDED,
    NOT_FOUND,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
)
from runtime.core.media import Refusal
from runtime.core.presence import PresenceState, presence_frame
from runtime.core.ratelimit import TokenBucket
from runtime.ports import Conversation, Message, Receipt, TypingEvent

# -- the records the machine reads: the port records (plain dataclasses, no I/O)
MessageRecord = Message
ReceiptRecord = Receipt
TypingRecord = TypingEvent
ConversationRecord = Conversation


class State(enum.Enum):
    CONNECTING = "connecting"  # authenticated, cursors not yet loaded / hello not yet said
    OPEN = "open"
    CLOSING = "closing"  # the server closes: frames are discarded, nothing new is sent
    CLOSED = "closed"  # the connection is gone


# -- actions: what the gateway carries out ------------------------------------------
# Local actions touch only this connection (its queue); the others are requests to a
# service or the store, whose answer is fed back through the method each one names.


@dataclass(frozen=True)
class Reply:
    """Queue `frame` for this device."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class Deliver:
    """Queue the `msg` frame of a sequenced message. `paced`: part of a fill that waited
    for room, so it may pass the queue bound by one page."""

    msg: MessageRecord
    paced: bool = False


@dataclass(frozen=True)
class Fill:
    """Read the store after `after` in `conv` (FILL_PAGE at a time) and feed each page to
    `filled`; `filled` asks for the next page with another `Fill`."""

    conv: str
    after: int
    hole: bool = False  # the page before stopped at a hole: read again after a pause


@dataclass(frozen=True)
class Close:
    """Close the connection; with `flush`, after what is already queued is sent. `cause`
    labels the close metric (None: not counted)."""

    code: int
    reason: str
    flush: bool = False
    cause: str | None = None


@dataclass(frozen=True)
class Register:
    """Make the session reachable (directory, presence) and wait until routers see it."""


@dataclass(frozen=True)
class Heartbeat:
    """The device is alive (it sent a frame): refresh its presence."""


@dataclass(frozen=True)
class Received:
    """A well-formed frame of type `kind` was taken (for the frames-in metric)."""

    kind: str


@dataclass(frozen=True)
class Authorize:
    """Look up `frame.conv` and feed it (or None) to `authorized`."""

    frame: f.Send | f.Ack | f.Read | f.Typing | f.Sync

    @property
    def id(self) -> str | None:
        return self.frame.id


@dataclass(frozen=True)
class ForwardAck:
    conv: str
    seq: int
    id: str | None


@dataclass(frozen=True)
class ForwardRead:
    conv: str
    seq: int
    id: str | None


@dataclass(frozen=True)
class PublishTyping:
    """Publish that the user is typing in `conv`."""

    conv: str
    id: str | None


@dataclass(frozen=True)
class ReadHistory:
    """Read up to `limit` + 1 messages of `conv` after `after`; feed them to `history`."""

    conv: str
    after: int
    limit: int
    id: str | None


@dataclass(frozen=True)
class ReadBacklog:
    """For each conversation of the user, read up to `limit` + 1 messages after this
    device's acked cursor and feed them to `history`; then call `synced`."""

    limit: int
    id: str | None


@dataclass(frozen=True)
class CreateConversation:
    """Create (or find) the conversation; feed the stored one to `created`."""

    conv: str
    members: tuple[str, ...]
    home: str
    title: str | None
    id: str | None


@dataclass(frozen=True)
class WatchPresence:
    """Watch `users`; feed their current states to `watched`."""

    users: tuple[str, ...]
    id: str | None


@dataclass(frozen=True)
class RegisterPush:
    platform: str
    token: str = field(repr=False)  # the gateway logs a failed action with %r
    id: str | None


@dataclass(frozen=True)
class UnregisterPush:
    """Forget this device's push token, whichever it is (none: nothing to do)."""

    id: str | None


@dataclass(frozen=True)
class RequestUpload:
    """Ask the media service for an upload slot; feed it (None: no media) to `upload_slot`."""

    kind: str
    content_type: str
    size: int
    id: str | None


@dataclass(frozen=True)
class AttachMedia:
    """Check the `media` a send carries; feed the result (None: no media) to `attached`."""

    frame: f.Send

    @property
    def id(self) -> str | None:
        return self.frame.id


@dataclass(frozen=True)
class Submit:
    """Hand a send to the sequencer (the gateway stamps its time when it does, after
    back-pressure); feed the stored message to `sent`, a failure to `not_sent`."""

    conv: str
    cid: str
    user: str
    device: str
    kind: str
    body: str = field(repr=False)  # the gateway logs a failed action with %r
    media: dict[str, Any] | None
    id: str | None


Action = (Reply | Deliver | Fill | Close | Register | Heartbeat | Received | Authorize
          | ForwardAck | ForwardRead | PublishTyping | ReadHistory | ReadBacklog
          | CreateConversation | WatchPresence | RegisterPush | UnregisterPush | RequestUpload
          | AttachMedia | Submit)


def msg_frame(msg: MessageRecord) -> dict[str, Any]:
    return {"t": "msg", **msg.to_wire()}


def error(code: str, message: str, fid: str | None = None, **extra: Any) -> Reply:
    frame: dict[str, Any] = {"t": "error", "code": code, "message": message, **extra}
    if fid is not None:
        frame["id"] = fid
    return Reply(frame)


def reply(frame: dict[str, Any], fid: str | None) -> Reply:
    if fid is not None:
        frame["id"] = fid
    return Reply(frame)


def batch(conv: str, msgs: Sequence[MessageRecord], limit: int,
          budget: int = paging.REPLY_BYTES) -> dict[str, Any]:
    """A `batch` frame from a read of `limit` + 1 messages: the extra one, or a page cut
    short at `budget` bytes, says `more`."""
    wire, more = paging.page(msgs, limit, budget)
    return {"t": "batch", "conv": conv, "msgs": wire, "more": more}


class SessionMachine:
    """The protocol state of one device connection."""

    # slots: tens of thousands of these live at once on one gateway
    __slots__ = ("user", "device", "id", "region", "heartbeat_ms", "limits", "state",
                 "cursors", "streams", "_bucket")

    def __init__(self, user: str, device: str, session_id: str, *, region: str,
                 heartbeat_ms: int, limits: f.Limits, bucket: TokenBucket) -> None:
        self.user = user
        self.device = device
        self.id = session_id
        self.region = region
        self.heartbeat_ms = heartbeat_ms
        self.limits = limits
        self.state = State.CONNECTING
        self.cursors: dict[str, int] = {}  # conv -> acked seq when this connection opened
        self.streams: dict[str, ConvStream] = {}
        self._bucket = bucket

    @property
    def closing(self) -> bool:
        return self.state in (State.CLOSING, State.CLOSED)

    # -- opening ----------------------------------------------------------
    def opened(self, cursors: dict[str, int]) -> list[Action]:
        """The device's acked cursors are loaded: register, then say hello.

        The cursors are set before the session can receive a live message, and hello
        waits for the registration, so a client that has hello gets everything routed
        from then on, ephemeral events (typing) included.
        """
        if self.closing:
            return []
        self.cursors = cursors
        hello = {"t": "hello", "user": self.user, "device": self.device,
                 "region": self.region, "session": self.id,
                 "heartbeat_ms": self.heartbeat_ms}
        self.state = State.OPEN
        return [Register(), Reply(hello)]

    def resume(self, conv: str, head: int) -> list[Action]:
        """After hello: fill `conv` if it moved past what this device acked. Idempotent,
        so a retried resume does not fill twice."""
        if self.closing or head <= self.cursors.get(conv, 0):
            return []
        return self._start_fill(conv)

    def catch_up(self, conv: str, head: int) -> list[Action]:
        """Fill `conv` if it moved past what this connection was sent (events lost in
        transit are still stored)."""
        if self.closing or head <= self.stream(conv).last:
            return []
        return self._start_fill(conv)

    # -- frames from the device --------------------------------------------
    def receive_frame(self, data: str | bytes, now: float) -> list[Action]:
        """One WebSocket message from the device; `now` is monotonic seconds."""
        if self.closing:
            # the gateway keeps reading, and discarding, so the peer's close frame is seen
            return []
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        verdict = self._bucket.check(now, size)
        if not verdict.allowed:
            if verdict.close:
                return self.close(CLOSE_POLICY, "rate limit exceeded", flush=True,
                                  cause="rate_limit")
            return [error(RATE_LIMITED, "slow down", f.peek_id(data), retry_ms=verdict.retry_ms)]
        out: list[Action] = [Heartbeat()]
        frame = f.parse_client_frame(data, self.limits)
        if isinstance(frame, f.FrameError):
            fid = frame.id if frame.id is not None else f.peek_id(data)
            out.append(error(frame.code, frame.message, fid))
            return out
        out.append(Received(type(frame).__name__.lower()))
        out.extend(self._dispatch(frame))
        return out

    def _dispatch(self, frame: f.ClientFrame) -> list[Action]:
        match frame:
            case f.Send() | f.Ack() | f.Read() | f.Typing() | f.Sync(conv=str()):
                return [Authorize(frame)]
            case f.Sync():
                return [ReadBacklog(frame.limit, frame.id)]
            case f.Ping():
                return [reply({"t": "pong"}, frame.id)]
            case f.Create():
                members = tuple(sorted({*frame.members, self.user}))
                return [CreateConversation(frame.conv or uuid.uuid4().hex, members, self.region,
                                           frame.title, frame.id)]
            case f.Watch():
                return [WatchPresence(frame.users, frame.id)]
            case f.PushRegister():
                return [RegisterPush(frame.platform, frame.token, frame.id),
                        reply({"t": "ok"}, frame.id)]
            case f.PushUnregister():
                # `ok` once the token is gone (the gateway drops it if the removal fails)
                return [UnregisterPush(frame.id), reply({"t": "ok"}, frame.id)]
            case f.Upload():
                return [RequestUpload(frame.kind, frame.content_type, frame.size, frame.id)]
        return []  # pragma: no cover - parse_client_frame returns only the types above

    # -- answers to what the machine asked for ------------------------------
    def authorized(self, request: Authorize, conv: ConversationRecord | None) -> list[Action]:
        """The conversation a frame names (None: there is none): members only."""
        frame = request.frame
        assert frame.conv is not None
        if self.closing:
            return []
        if conv is None:
            return [error(NOT_FOUND, f"no conversation '{frame.conv}'", frame.id)]
        if self.user not in conv.members:
            return [error(FORBIDDEN, f"not a member of '{frame.conv}'", frame.id)]
        match frame:
            case f.Ack():
                return [ForwardAck(frame.conv, frame.seq, frame.id)]
            case f.Read():
                return [ForwardRead(frame.conv, frame.seq, frame.id)]
            case f.Typing():
                return [PublishTyping(frame.conv, frame.id)]
            case f.Sync():
                return [ReadHistory(frame.conv, frame.after, frame.limit, frame.id)]
            case f.Send(media=None):
                return [self._submit(frame, None)]
            case f.Send():
                return [AttachMedia(frame)]
        return []  # pragma: no cover

    def attached(self, request: AttachMedia, checked: dict[str, Any] | Refusal | None
                 ) -> list[Action]:
        """The media a send carries, as checked by the media service (None: not configured)."""
        frame = request.frame
        if self.closing:
            return []
        if checked is None:
            return [error(UNAVAILABLE, "media is not configured on this deployment", frame.id)]
        if isinstance(checked, Refusal):
            return [error(checked.code, checked.message, frame.id)]
        return [self._submit(frame, checked)]

    def _submit(self, frame: f.Send, media: dict[str, Any] | None) -> Submit:
        return Submit(frame.conv, frame.cid, self.user, self.device, frame.kind, frame.body,
                      media, frame.id)

    def sent(self, request: Submit, msg: MessageRecord) -> list[Action]:
        """The send is stored (durable) as `msg`."""
        if self.closing:
            return []
        return [reply({"t": "sent", "conv": msg.conv, "cid": msg.cid, "seq": msg.seq,
                       "prev": msg.prev, "ts": msg.ts}, request.id)]

    def not_sent(self, request: Submit, *, retryable: bool, detail: str | None = None
                 ) -> list[Action]:
        """The send failed: `retryable` when an engine was away (`detail` says why) or the
        submission was cancelled; either way nothing was stored twice, so the client
        retries with the same cid."""
        if self.closing:
            return []
        if not retryable:
            return [error(INTERNAL, "internal error; retry with the same cid", request.id)]
        suffix = "" if detail is None else f": {detail}"
        return [error(UNAVAILABLE, f"not stored, retry with the same cid{suffix}", request.id)]

    def history(self, request: ReadHistory | ReadBacklog, conv: str,
                msgs: Sequence[MessageRecord]) -> list[Action]:
        """A page read for `sync` (limit + 1 messages: the extra one means `more`)."""
        if self.closing:
            return []
        if isinstance(request, ReadBacklog) and not msgs:
            return []  # a sync of everything names only conversations with something new
        return [reply(batch(conv, msgs, request.limit, self.limits.max_page_bytes), request.id)]

    def synced(self, request: ReadBacklog) -> list[Action]:
        if self.closing:
            return []
        return [reply({"t": "synced"}, request.id)]

    def created(self, request: CreateConversation, conv: ConversationRecord) -> list[Action]:
        """The stored conversation: one that already existed with other members is refused."""
        if self.closing:
            return []
        if set(conv.members) != set(request.members):
            return [error(FORBIDDEN, f"conversation '{request.conv}' exists with other members",
                          request.id)]
        out: dict[str, Any] = {"t": "created", "conv": conv.conv, "members": list(conv.members),
                               "home": conv.home}
        if conv.title is not None:
            out["title"] = conv.title
        return [reply(out, request.id)]

    def capped(self, request: CreateConversation, message: str) -> list[Action]:
        """A create refused because a member holds as many conversations as allowed."""
        if self.closing:
            return []
        return [error(LIMIT_EXCEEDED, message, request.id)]

    def watched(self, request: WatchPresence, states: Iterable[PresenceState]) -> list[Action]:
        if self.closing:
            return []
        return [reply(presence_frame(state), request.id) for state in states]

    def upload_slot(self, request: RequestUpload, slot: dict[str, Any] | Refusal | None
                    ) -> list[Action]:
        """The media service's answer to an `upload` (None: media is not configured)."""
        if self.closing:
            return []
        if slot is None:
            return [error(UNAVAILABLE, "media uploads are not configured on this deployment",
                          request.id)]
        if isinstance(slot, Refusal):
            return [error(slot.code, slot.message, request.id)]
        return [reply(slot, request.id)]

    def failed(self, fid: str | None, *, retryable: bool) -> list[Action]:
        """An action carrying out frame `fid` raised: an engine that was away
        (`retryable`) is retried by the client; anything else is an internal error. The
        connection stays open."""
        if self.closing:
            return []
        if retryable:
            return [error(UNAVAILABLE, "temporarily unavailable; retry", fid)]
        return [error(INTERNAL, "internal error", fid)]

    # -- events routed to this device --------------------------------------
    def deliver_message(self, msg: MessageRecord) -> list[Action]:
        """A sequenced message of a conversation the user is in: sent in seq order, with
        no gap (a gap is filled from the store) and no duplicate."""
        if self.closing:
            return []
        offer = self.stream(msg.conv).offer(self._entry(msg))
        if offer is Offer.DELIVER:
            return [Deliver(msg)]
        if offer is Offer.FILL:
            return [Fill(msg.conv, self.stream(msg.conv).last)]
        return []

    def deliver_receipt(self, receipt: ReceiptRecord) -> list[Action]:
        if self.closing:
            return []
        if receipt.user != self.user:
            return [Reply({"t": "receipt", "conv": receipt.conv, "user": receipt.user,
                           "kind": receipt.kind, "seq": receipt.seq})]
        # the user's own read: its other devices mark the conversation read too; the
        # device that read it already knows
        if receipt.kind == "read" and receipt.device != self.device:
            return [Reply({"t": "read_sync", "conv": receipt.conv, "seq": receipt.seq})]
        return []

    def deliver_typing(self, typing: TypingRecord) -> list[Action]:
        if self.closing:
            return []
        return [Reply({"t": "typing", "conv": typing.conv, "user": typing.user})]

    def presence(self, state: PresenceState) -> list[Action]:
        """A watched user's presence changed."""
        if self.closing:
            return []
        return [Reply(presence_frame(state))]

    def filled(self, conv: str, page: Sequence[MessageRecord], page_full: bool,
               accept_holes: bool = True) -> list[Action]:
        """One page a `Fill` read: the messages to send, in order, then another `Fill` if
        there is more to read (`hole` set when the page stopped at a hole, see
        `ConvStream.filled`)."""
        stream = self.stream(conv)
        if self.closing:
            stream.abort_fill()
            return []
        fit = paging.fitting(page, self.limits.max_page_bytes)
        if fit < len(page):  # the rest is read again after the last one sent
            page, page_full = page[:fit], True
        by_seq = {m.seq: m for m in page}
        entries, more = stream.filled([self._entry(m) for m in page], page_full, accept_holes)
        out: list[Action] = [Deliver(by_seq[e.seq], paced=True) for e in entries]
        if more:
            out.append(Fill(conv, stream.last, stream.hole))
        return out

    def fill_failed(self, conv: str) -> None:
        """A fill gave up (or its connection closed): the next offer starts a new one."""
        self.stream(conv).abort_fill()

    def stream(self, conv: str) -> ConvStream:
        stream = self.streams.get(conv)
        if stream is None:
            stream = self.streams[conv] = ConvStream(self.cursors.get(conv, 0))
        return stream

    def _entry(self, msg: MessageRecord) -> Entry:
        # the sending device got `sent` for its own message, not a `msg`; a message that a
        # failover moved is sent to it too, since its `sent` named the seq it had before
        return Entry(msg.seq, msg.prev, own=msg.sender == self.user and
                     msg.from_device == self.device and
                     msg.moved_from is None)

    def _start_fill(self, conv: str) -> list[Action]:
        stream = self.stream(conv)
        return [Fill(conv, stream.last)] if stream.start_fill() else []

    # -- ending ------------------------------------------------------------
    def expire(self) -> list[Action]:
        """The token the connection was opened with expired."""
        if self.closing:
            return []
        return [error(UNAUTHORIZED, "token expired; reconnect with a fresh token"),
                *self.close(CLOSE_POLICY, "token expired", flush=True, cause="token_expired")]

    def close(self, code: int, reason: str, *, flush: bool = False,
              cause: str | None = None) -> list[Action]:
        """The server closes the connection (once: a second close is ignored)."""
        if self.closing:
            return []
        self.state = State.CLOSING
        return [Close(code, reason, flush, cause)]

    def connection_lost(self) -> None:
        """The connection is gone, whoever closed it."""
        self.state = State.CLOSED
