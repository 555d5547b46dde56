"""The gateway's media API: upload slots for `upload` frames, media checks for `send`."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from runtime.config import MediaConfig
from runtime.core import media as core
from runtime.core.errors import BAD_FRAME, FORBIDDEN, LIMIT_EXCEEDED, TOO_LARGE, UNAVAILABLE
from runtime.core.quota import Window
from runtime.media.store import BlobStore, BlobStoreDown

HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}\Z|^\[[0-9A-Fa-f:.]{2,45}\]\Z")


def rules_of(cfg: MediaConfig) -> core.MediaRules:
    max_bytes = dict(core.DEFAULT_MAX_BYTES) | dict(cfg.max_bytes)
    ctypes = {k: list(v) for k, v in core.DEFAULT_CONTENT_TYPES.items()}
    ctypes |= {k: [c.lower() for c in v] for k, v in cfg.content_types.items()}
    return core.MediaRules(max_bytes, ctypes, cfg.upload_ttl_s, cfg.url_ttl_s)


def client_host(host_header: str | None, default: str) -> str:
    """The host name the client reached (from its Host header), for URLs it can reach too."""
    if not host_header:
        return default
    host = host_header.strip()
    host = host[:host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
    return host if HOST_RE.match(host) else default


class MediaService:
    def __init__(self, cfg: MediaConfig, secret: bytes, store: BlobStore, port: int, *,
                 clock: Callable[[], float] = time.time,
                 token: Callable[[], str] = lambda: secrets.token_hex(16),
                 max_slots: int = 20, secure: bool = False) -> None:
        self.cfg = cfg
        self.scheme = "https" if secure else "http"  # the endpoint serves TLS
        self.rules = rules_of(cfg)
        self.secret = secret
        self.store = store
        self.port = port
        self.clock = clock
        self.token = token
        # slots granted and not yet expired, per user (on this gateway)
        self.slots = Window(max_slots, self.rules.upload_ttl_s)

    def base(self, host: str) -> str:
        return self.cfg.public_url or f"{self.scheme}://{host}:{self.port}"

    def _media(self, host: str, key: str, content_type: str, size: int,
               etag: str = "") -> dict[str, Any]:
        expires = int(self.clock()) + self.rules.url_ttl_s
        # at send the object is known: its URL pins that object (S3), see core.Pinned
        pin = core.Pinned(etag, content_type) if etag else None
        return {"key": key,
                "url": core.sign_url(self.secret, self.base(host), key, expires, pin),
                "content_type": content_type, "size": size}

    def slot(self, user: str, kind: str, content_type: str, size: int,
             host: str) -> dict[str, Any] | core.Refusal:
        """The `upload_url` reply to an `upload` frame, or why it is refused."""
        refusal = core.check_upload(self.rules, kind, content_type, size)
        if refusal is not None:
            return refusal
        if not self.slots.take(user, self.clock()):
            return core.Refusal(LIMIT_EXCEEDED, f"{self.slots.cap} upload slots are open "
                                f"already; use them or wait up to {self.rules.upload_ttl_s} s")
        content_type = content_type.lower()
        key = core.new_key(user, self.token())
        url, fields = self.store.presign(self.base(host), key, content_type, size,
                                         int(self.clock()), self.rules.upload_ttl_s)
        return {"t": "upload_url", "upload": {"url": url, "fields": fields},
                "media": self._media(host, key, content_type, size)}

    async def attach(self, user: str, kind: str, media: Any,
                     host: str) -> dict[str, Any] | core.Refusal:
        """The `media` a message carries, after checking the sender uploaded that blob."""
        parsed = core.media_of(media)
        if isinstance(parsed, core.Refusal):
            return parsed
        key, ctype, size = parsed
        if not core.owns(user, key):
            return core.Refusal(FORBIDDEN, f"media key '{key[:200]}' is not one of your "
                                "uploads")
        try:
            info = await self.store.head(key)
        except BlobStoreDown as exc:
            return core.Refusal(UNAVAILABLE, f"the blob store did not answer, retry: {exc}")
        if info is None:
            return core.Refusal(BAD_FRAME, f"media key '{key}' was never uploaded (POST the "
                                "file to upload.url first)")
        if ctype is not None and ctype.lower() != info.content_type:
            return core.Refusal(BAD_FRAME, f"media.content_type '{ctype}' does not match the "
                                f"uploaded blob ({info.content_type})")
        if size is not None and size != info.size:
            return core.Refusal(BAD_FRAME, f"media.size {size} does not match the uploaded "
                                f"blob ({info.size} bytes)")
        # the blob as stored, checked again: the media endpoints write what a slot allows,
        # but anything else writing the bucket (S3 credentials) could store any type or size
        if info.content_type not in self.rules.content_types.get(kind, []):
            return core.Refusal(BAD_FRAME, f"a {info.content_type} blob cannot be sent as "
                                f"kind '{kind}'")
        ceiling = self.rules.max_bytes.get(kind, 0)
        if info.size > ceiling:
            return core.Refusal(TOO_LARGE, f"the uploaded blob has {info.size} bytes; {kind} "
                                f"media are limited to {ceiling} bytes")
        return self._media(host, key, info.content_type, info.size, info.etag)
