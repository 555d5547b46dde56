"""Limits the providers put on a notification's contents."""

from __future__ import annotations

MAX_BODY_CHARS = 1000  # FCM refuses messages over 4 KB and APNs payloads over 4 KB
MAX_COLLAPSE_BYTES = 64  # apns-collapse-id


def shorten(text: str, limit: int = MAX_BODY_CHARS) -> str:
    """A message body cut to fit a notification (the app fetches the whole message)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def collapse_id(value: str) -> str:
    """At most 64 bytes of UTF-8, cut on a character boundary."""
    raw = value.encode()[:MAX_COLLAPSE_BYTES]
    return raw.decode(errors="ignore")
