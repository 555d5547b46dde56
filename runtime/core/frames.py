"""Client frame parsing and validation (protocol v1), with no I/O.

`parse_client_frame` turns the raw text of one WebSocket message into a typed
frame or a `FrameError` that the gateway sends back as an `error` frame. It
never raises on input: every byte string a client can send maps to one of the
two, which the fuzz tests check.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from runtime.core.errors import BAD_FRAME, TOO_LARGE

KINDS = frozenset({"text", "image", "video", "audio", "file"})
PLATFORMS = frozenset({"fcm", "apns"})
# APNs tokens are hex, FCM registration tokens base64url with ':'; nothing that could
# change a URL path ('/', '?', '%', '.') or break out of one
TOKEN_RE = re.compile(r"[A-Za-z0-9_:\-]+")
MAX_ID_LEN = 128
MAX_CID_LEN = 64
MAX_USER_LEN = 128
MAX_DEVICE_LEN = 128  # what runtime.auth accepts in a token's `did`
MAX_KIND_LEN = 16
MAX_CONV_LEN = 128
MAX_MEMBERS = 1000
MAX_WATCH = 1000
MAX_SYNC_LIMIT = 1000
DEFAULT_SYNC_LIMIT = 100
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """Size limits that the topology may tune."""

    max_frame_bytes: int = 64 * 1024  # soft: `too_large` error, connection kept
    max_body_bytes: int = 16 * 1024
    # a page of history (`batch`, a fill page, REST) stops at this many bytes of messages;
    # the gateway makes it at most a quarter of a connection's send queue
    max_page_bytes: int = 1024 * 1024  # = paging.REPLY_BYTES


@dataclass(frozen=True)
class FrameError:
    code: str
    message: str
    id: str | None = None


@dataclass(frozen=True)
class Create:
    members: tuple[str, ...]
    title: str | None = None
    conv: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Send:
    conv: str
    cid: str
    kind: str
    body: str = field(repr=False)  # never in a log line (a %r of the frame)
    media: dict[str, Any] | None = None
    id: str | None = None


@dataclass(frozen=True)
class Ack:
    conv: str
    seq: int
    id: str | None = None


@dataclass(frozen=True)
class Read:
    conv: str
    seq: int
    id: str | None = None


@dataclass(frozen=True)
class Sync:
    conv: str | None  # None: every conversation with messages this device has not acked
    after: int = 0
    limit: int = DEFAULT_SYNC_LIMIT
    id: str | None = None


@dataclass(frozen=True)
class Watch:
    users: tuple[str, ...]
    id: str | None = None


@dataclass(frozen=True)
class Typing:
    conv: str
    id: str | None = None


@dataclass(frozen=True)
class PushRegister:
    platform: str
    token: str = field(repr=False)  # a device credential: never in a log line
    id: str | None = None


@dataclass(frozen=True)
class PushUnregister:
    """Forget this device's push token (a logout); no fields but `id`."""

    id: str | None = None


@dataclass(frozen=True)
class Upload:
    kind: str
    content_type: str
    size: int
    id: str | None = None


@dataclass(frozen=True)
class Ping:
    id: str | None = None


ClientFrame = (Create | Send | Ack | Read | Sync | Watch | Typing | PushRegister | PushUnregister
               | Upload | Ping)


def _utf8_len(value: str, name: str) -> int:
    # json.loads accepts lone surrogates ("\\ud800"); they cannot be stored or relayed as UTF-8
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Invalid(f"field '{name}' is not valid UTF-8") from None


class _Invalid(Exception):
    def __init__(self, message: str, code: str = BAD_FRAME) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Fields:
    raw: dict[str, Any]

    def string(self, name: str, *, max_len: int, required: bool = True, min_len: int = 1) -> Any:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise _Invalid(f"missing field '{name}'")
            return None
        if not isinstance(value, str):
            raise _Invalid(f"field '{name}' must be a string")
        if not min_len <= len(value) <= max_len:
            raise _Invalid(f"field '{name}' must be {min_len}-{max_len} characters")
        _utf8_len(value, name)
        return value

    def integer(self, name: str, *, required: bool = True, default: int = 0, lo: int = 0,
                hi: int = MAX_SEQ) -> int:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise _Invalid(f"missing field '{name}'")
            return default
        # bool is an int subclass; a JSON true is not a sequence number
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"field '{name}' must be an integer")
        if not lo <= value <= hi:
            raise _Invalid(f"field '{name}' must be between {lo} and {hi}")
        return value

    def string_list(self, name: str, *, max_items: int, required: bool = True) -> tuple[str, ...]:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise _Invalid(f"missing field '{name}'")
            return ()
        if not isinstance(value, list):
            raise _Invalid(f"field '{name}' must be a list of strings")
        if len(value) > max_items:
            raise _Invalid(f"field '{name}' has more than {max_items} entries")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not 1 <= len(item) <= MAX_USER_LEN:
                raise _Invalid(f"field '{name}' must hold user ids of 1-{MAX_USER_LEN} characters")
            _utf8_len(item, name)
            out.append(item)
        return tuple(dict.fromkeys(out))  # de-duplicated, first-seen order


def _parse_create(f: _Fields, fid: str | None) -> Create:
    members = f.string_list("members", max_items=MAX_MEMBERS)
    title = f.string("title", max_len=256, required=False, min_len=0)
    conv = f.string("conv", max_len=MAX_CONV_LEN, required=False)
    return Create(members=members, title=title, conv=conv, id=fid)


def _parse_send(f: _Fields, fid: str | None, limits: Limits) -> Send:
    conv = f.string("conv", max_len=MAX_CONV_LEN)
    cid = f.string("cid", max_len=MAX_CID_LEN)
    kind = f.string("kind", max_len=MAX_KIND_LEN)
    if kind not in KINDS:
        raise _Invalid(f"field 'kind' must be one of {', '.join(sorted(KINDS))}")
    body = f.raw.get("body")
    if not isinstance(body, str):
        raise _Invalid("field 'body' must be a string")
    if _utf8_len(body, "body") > limits.max_body_bytes:
        raise _Invalid(f"body exceeds {limits.max_body_bytes} bytes", TOO_LARGE)
    media = f.raw.get("media")
    if media is not None and not isinstance(media, dict):
        raise _Invalid("field 'media' must be an object")
    return Send(conv=conv, cid=cid, kind=kind, body=body, media=media, id=fid)


def _parse_sync(f: _Fields, fid: str | None) -> Sync:
    conv = f.string("conv", max_len=MAX_CONV_LEN, required=False)
    after = f.integer("after", required=False)
    limit = f.integer("limit", required=False, default=DEFAULT_SYNC_LIMIT, lo=1,
                      hi=MAX_SYNC_LIMIT)
    return Sync(conv=conv, after=after, limit=limit, id=fid)


def _parse_push_register(f: _Fields, fid: str | None) -> PushRegister:
    platform = f.string("platform", max_len=8)
    if platform not in PLATFORMS:
        raise _Invalid("field 'platform' must be 'fcm' or 'apns'")
    token = f.string("token", max_len=4096)
    # the token goes into the provider's URL path (APNs) or JSON (FCM): only the
    # characters the providers issue, so it can never steer the request elsewhere
    if not TOKEN_RE.fullmatch(token):
        raise _Invalid("field 'token' may hold only letters, digits, '-', '_' and ':'")
    return PushRegister(platform=platform, token=token, id=fid)


def _parse_upload(f: _Fields, fid: str | None) -> Upload:
    kind = f.string("kind", max_len=MAX_KIND_LEN)
    if kind not in KINDS:
        raise _Invalid(f"field 'kind' must be one of {', '.join(sorted(KINDS))}")
    content_type = f.string("content_type", max_len=255)
    size = f.integer("size", lo=1, hi=2**40)
    return Upload(kind=kind, content_type=content_type, size=size, id=fid)


def _parse(obj: dict[str, Any], fid: str | None, limits: Limits) -> ClientFrame:
    f = _Fields(obj)
    t = obj["t"]
    if t == "send":
        return _parse_send(f, fid, limits)
    if t == "ack":
        return Ack(conv=f.string("conv", max_len=MAX_CONV_LEN), seq=f.integer("seq"), id=fid)
    if t == "read":
        return Read(conv=f.string("conv", max_len=MAX_CONV_LEN), seq=f.integer("seq"), id=fid)
    if t == "ping":
        return Ping(id=fid)
    if t == "sync":
        return _parse_sync(f, fid)
    if t == "create":
        return _parse_create(f, fid)
    if t == "watch":
        return Watch(users=f.string_list("users", max_items=MAX_WATCH), id=fid)
    if t == "typing":
        return Typing(conv=f.string("conv", max_len=MAX_CONV_LEN), id=fid)
    if t == "push_register":
        return _parse_push_register(f, fid)
    if t == "push_unregister":
        return PushUnregister(id=fid)
    if t == "upload":
        return _parse_upload(f, fid)
    raise _Invalid(f"unknown frame type '{t}'")


class _NotJsonNumber(ValueError):
    """NaN, Infinity, -Infinity or a number beyond a double: json.loads reads them, JSON
    has none of them."""


def _no_constant(name: str) -> Any:
    raise _NotJsonNumber(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: beyond a double
        raise _NotJsonNumber(f"{text} is out of range")
    return value


# JSON as RFC 8259 has it: json.loads also reads NaN, Infinity and -Infinity, and a
# number beyond a double as infinity, none of which a client can be sent back
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _id_of(obj: Any) -> str | None:
    fid = obj.get("id") if isinstance(obj, dict) else None
    return fid if isinstance(fid, str) and len(fid) <= MAX_ID_LEN else None


def peek_id(data: str | bytes) -> str | None:
    """The `id` of a refused frame, so the client can tell which one to retry."""
    try:
        return _id_of(json.loads(data))
    except (ValueError, RecursionError, TypeError):
        return None


def parse_client_frame(data: str | bytes, limits: Limits = Limits()) -> ClientFrame | FrameError:
    """Parse one client message; never raises."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limits.max_frame_bytes:
        return FrameError(TOO_LARGE, f"frame exceeds {limits.max_frame_bytes} bytes")
    if isinstance(data, bytes):
        return FrameError(BAD_FRAME, "frames must be JSON text frames, not binary")
    try:
        obj = _DECODER.decode(data)
    except _NotJsonNumber:
        try:  # json.loads reads it: as any other refused frame, with its id
            lenient = json.loads(data)
        except (ValueError, RecursionError):
            return FrameError(BAD_FRAME, "frame is not valid JSON")
        return FrameError(BAD_FRAME, "frame is not valid JSON: it holds NaN, Infinity or a "
                          "number beyond a double's range", _id_of(lenient))
    except (ValueError, RecursionError):
        return FrameError(BAD_FRAME, "frame is not valid JSON")
    if not isinstance(obj, dict):
        return FrameError(BAD_FRAME, "frame must be a JSON object")
    fid = obj.get("id")
    if fid is not None and (not isinstance(fid, str) or len(fid) > MAX_ID_LEN):
        return FrameError(BAD_FRAME, f"field 'id' must be a string of at most {MAX_ID_LEN} "
                          "characters")
    t = obj.get("t")
    if not isinstance(t, str):
        return FrameError(BAD_FRAME, "missing string field 't'", fid)
    try:
        return _parse(obj, fid, limits)
    except _Invalid as exc:
        return FrameError(exc.code, exc.message, fid)
