"""Media rules with no I/O: upload policy, object keys, signed POST policies, signed URLs.

The gateway asks `check_upload` whether an `upload` frame is allowed, makes a
key bound to the user with `new_key`, and hands out a presigned POST
(`presign_post`, S3-style: a base64 JSON policy pinning key, content type and
a size range, with an expiry, signed with HMAC-SHA256) and a download URL
signed CloudFront-style (`sign_url`: expiry, key id, signature). The media
endpoints check both with `verify_post` and `verify_url`. A download URL may
also pin the object it serves (`Pinned`: the ETag and content type the gateway
saw at `send`), so an object replaced after the send is never served under it.
Time is always an argument (`now`, seconds since the epoch); randomness too
(`token` in `new_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from runtime.core.errors import BAD_FRAME, FORBIDDEN, TOO_LARGE

MiB = 1024 * 1024
UPLOAD_KINDS = ("image", "video", "audio", "file")
DEFAULT_MAX_BYTES: dict[str, int] = {
    "image": 10 * MiB, "video": 100 * MiB, "audio": 20 * MiB, "file": 50 * MiB}
DEFAULT_CONTENT_TYPES: dict[str, list[str]] = {
    "image": ["image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/avif"],
    "video": ["video/mp4", "video/quicktime", "video/webm", "video/3gpp"],
    "audio": ["audio/mpeg", "audio/mp4", "audio/aac", "audio/ogg", "audio/webm", "audio/wav",
              "audio/opus"],
    "file": ["application/pdf", "application/zip", "application/octet-stream", "text/plain",
             "application/json", "application/msword",
             "application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
}
ALGORITHM = "MSGCTL-HMAC-SHA256"
TOKEN_RE = re.compile(r"^[0-9a-f]{32}\Z")
# u/<user segment>/<32 hex>: only characters that no URL normalizer rewrites, and no
# '/' or '..' from the user id
KEY_RE = re.compile(r"^u/(~[0-9a-f]{2,1024}|[A-Za-z0-9_-]{1,128})/[0-9a-f]{32}\Z")
PLAIN_USER_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
# S3 ETags without their quotes: hex MD5, or hex-<parts> for multipart uploads
ETAG_RE = re.compile(r"^[0-9A-Za-z_-]{1,128}\Z")
# a pinned content type: printable ASCII (no newline can shift the signed payload's fields)
PIN_TYPE_RE = re.compile(r"^[!-~][ -~]{0,254}\Z")


@dataclass(frozen=True)
class Refusal:
    """Why a media request is refused: a protocol error code and a sentence."""

    code: str
    message: str


@dataclass(frozen=True)
class MediaRules:
    max_bytes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_BYTES))
    content_types: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_CONTENT_TYPES.items()})
    upload_ttl_s: int = 900
    url_ttl_s: int = 7 * 86400


def check_upload(rules: MediaRules, kind: str, content_type: str, size: int) -> Refusal | None:
    """None when the `upload` frame may get a slot, else why not."""
    if kind not in UPLOAD_KINDS:
        return Refusal(BAD_FRAME, f"kind '{kind}' cannot be uploaded; use one of "
                       f"{', '.join(UPLOAD_KINDS)}")
    allowed = rules.content_types.get(kind, [])
    if content_type.lower() not in allowed:
        return Refusal(BAD_FRAME, f"content_type '{content_type}' is not allowed for {kind}; "
                       f"allowed: {', '.join(allowed)}")
    ceiling = rules.max_bytes.get(kind, 0)
    if size > ceiling:
        return Refusal(TOO_LARGE, f"{kind} uploads are limited to {ceiling} bytes "
                       f"({size} asked)")
    if size < 1:
        return Refusal(BAD_FRAME, "size must be at least 1 byte")
    return None


def user_segment(user: str) -> str:
    """The user id as it appears in keys and URLs, one to one: as is when it is made of
    letters, digits, '_' and '-', else '~' and the hex of its UTF-8 (which no plain id has)."""
    if PLAIN_USER_RE.match(user):
        return user
    return "~" + user.encode("utf-8", "surrogatepass").hex()


def new_key(user: str, token: str) -> str:
    """The object key of a new upload of `user`; `token` is 32 random hex characters."""
    if not TOKEN_RE.match(token):
        raise ValueError("token must be 32 lower-case hex characters")
    return f"u/{user_segment(user)}/{token}"


def valid_key(key: str) -> bool:
    return bool(KEY_RE.match(key))


def owns(user: str, key: str) -> bool:
    """Whether `key` is one of `user`'s upload keys."""
    return valid_key(key) and key.startswith(f"u/{user_segment(user)}/")


def derive_secret(deployment_secret: str) -> bytes:
    """The media signing secret of a deployment (never the JWT secret itself)."""
    return hmac.new(deployment_secret.encode(), b"msgctl-media-v1", hashlib.sha256).digest()


def key_id(secret: bytes) -> str:
    """A public name of a signing secret, so URLs say which key signed them (rotation)."""
    return "m" + hashlib.sha256(b"key-id:" + secret).hexdigest()[:11]


def _mac(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def presign_post(secret: bytes, key: str, content_type: str, max_size: int,
                 now: int, ttl_s: int) -> dict[str, str]:
    """The form fields of a POST that may store exactly `key`, as `content_type`, of at
    most `max_size` bytes, until now + ttl_s. The file goes last, as the `file` field."""
    policy = {"expiration": _iso(now + ttl_s),
              "conditions": [{"key": key}, {"Content-Type": content_type},
                             ["content-length-range", 1, max_size]]}
    encoded = base64.b64encode(json.dumps(policy, separators=(",", ":")).encode()).decode()
    return {"key": key, "Content-Type": content_type, "policy": encoded,
            "x-amz-algorithm": ALGORITHM, "x-amz-credential": key_id(secret),
            "x-amz-signature": _mac(secret, encoded)}


@dataclass(frozen=True)
class PostGrant:
    """What a verified POST may store."""

    key: str
    content_type: str
    min_size: int
    max_size: int


def verify_post(secret: bytes, fields: dict[str, str], now: int) -> PostGrant | Refusal:
    """Check a presigned POST's form fields (everything but the file) exactly."""
    encoded = fields.get("policy")
    signature = fields.get("x-amz-signature")
    if not encoded or not signature:
        return Refusal("bad_request", "missing 'policy' or 'x-amz-signature' field")
    if fields.get("x-amz-credential") != key_id(secret):
        return Refusal(FORBIDDEN, "unknown signing key (x-amz-credential)")
    if not _same(_mac(secret, encoded), signature):
        return Refusal(FORBIDDEN, "signature does not match the policy")
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
        expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ")
        expires_ts = int(expires.replace(tzinfo=UTC).timestamp())
        conds = policy["conditions"]
        key = next(c["key"] for c in conds if isinstance(c, dict) and "key" in c)
        ctype = next(c["Content-Type"] for c in conds
                     if isinstance(c, dict) and "Content-Type" in c)
        lo, hi = next((c[1], c[2]) for c in conds
                      if isinstance(c, list) and c[0] == "content-length-range")
    except (ValueError, KeyError, TypeError, StopIteration, IndexError, binascii.Error):
        return Refusal("bad_request", "the policy is not a valid upload policy")
    if now >= expires_ts:
        return Refusal(FORBIDDEN, f"the upload policy expired at {policy['expiration']}")
    if fields.get("key") != key:
        return Refusal(FORBIDDEN, "field 'key' does not match the policy")
    if fields.get("Content-Type") != ctype:
        return Refusal(FORBIDDEN, "field 'Content-Type' does not match the policy")
    if not valid_key(key):
        return Refusal(FORBIDDEN, "the policy's key is not an upload key")
    return PostGrant(key, ctype, int(lo), int(hi))


def check_size(grant: PostGrant, size: int) -> Refusal | None:
    if size > grant.max_size:
        return Refusal("EntityTooLarge", f"the file exceeds the policy's {grant.max_size} bytes")
    if size < grant.min_size:
        return Refusal("EntityTooSmall", f"the file is under the policy's {grant.min_size} "
                       "bytes")
    return None


@dataclass(frozen=True)
class Pinned:
    """The object a download URL may serve: its ETag (unquoted) and the content type to
    serve it as, both as the gateway saw them at `send`."""

    etag: str
    content_type: str


def pin_of(query: dict[str, str]) -> Pinned | None | Refusal:
    """The pin a download URL's query carries (`etag` and `type`), None if it has none."""
    etag, ctype = query.get("etag"), query.get("type")
    if etag is None and ctype is None:
        return None
    if etag is None or ctype is None or not ETAG_RE.match(etag) or not PIN_TYPE_RE.match(
            ctype):
        return Refusal(FORBIDDEN, "bad 'etag' or 'type'")
    return Pinned(etag, ctype)


def _url_payload(key: str, expires: int, kid: str, pin: Pinned | None) -> str:
    base = f"GET\n{key}\n{expires}\n{kid}"
    # a pinned URL signs two more lines: an unpinned signature never passes for a pinned
    # URL, nor the reverse (the etag has no newline, so the fields cannot shift)
    return base if pin is None else f"{base}\n{pin.etag}\n{pin.content_type}"


def sign_url(secret: bytes, base: str, key: str, expires: int,
             pin: Pinned | None = None) -> str:
    """`base`/v1/media/`key` with expiry, key id and signature (CloudFront-style), and the
    pinned object's `etag` and `type` when `pin` is given."""
    if pin is not None and not (ETAG_RE.match(pin.etag)
                                and PIN_TYPE_RE.match(pin.content_type)):
        raise ValueError(f"cannot pin etag {pin.etag!r} / type {pin.content_type!r}")
    kid = key_id(secret)
    params: dict[str, str | int] = {"expires": expires, "key_id": kid}
    if pin is not None:
        params |= {"etag": pin.etag, "type": pin.content_type}
    params["signature"] = _mac(secret, _url_payload(key, expires, kid, pin))
    return f"{base.rstrip('/')}/v1/media/{key}?{urlencode(params)}"


def verify_url(secrets: list[bytes], key: str, query: dict[str, str], now: int
               ) -> Refusal | None:
    """None when the download URL's query signs `key` (and its pin, if any, see `pin_of`)
    with a known key and has not expired.

    `secrets` are the accepted signing secrets, the current one first (rotation)."""
    raw_expires = query.get("expires", "")
    if not (raw_expires.isascii() and raw_expires.isdigit() and len(raw_expires) < 16):
        return Refusal(FORBIDDEN, "missing or bad 'expires'")
    expires = int(raw_expires)
    kid = query.get("key_id", "")
    signature = query.get("signature", "")
    secret = next((s for s in secrets if key_id(s) == kid), None)
    if secret is None:
        return Refusal(FORBIDDEN, "unknown key_id")
    pin = pin_of(query)
    if isinstance(pin, Refusal):
        return pin
    if not _same(_mac(secret, _url_payload(key, expires, kid, pin)), signature):
        return Refusal(FORBIDDEN, "bad signature")
    if now >= expires:
        return Refusal(FORBIDDEN, "the URL expired")
    return None


def media_of(frame_media: Any) -> tuple[str, str | None, int | None] | Refusal:
    """The key, and the content type and size if given, of a `send`'s `media` object."""
    if not isinstance(frame_media, dict):
        return Refusal(BAD_FRAME, "field 'media' must be an object")
    key = frame_media.get("key")
    if not isinstance(key, str) or not key:
        return Refusal(BAD_FRAME, "field 'media.key' must be the key from upload_url")
    ctype = frame_media.get("content_type")
    if ctype is not None and not isinstance(ctype, str):
        return Refusal(BAD_FRAME, "field 'media.content_type' must be a string")
    size = frame_media.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        return Refusal(BAD_FRAME, "field 'media.size' must be an integer")
    return key, ctype, size
