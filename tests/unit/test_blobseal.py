"""Sealed blobs: segment-wise AES-256-GCM, opened whatever the pieces they arrive in, and
refused when cut short, reordered, extended or moved to another key."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.blobseal import SEGMENT, BlobOpener, BlobSealer, open_all, sealed_size
from runtime.core.sealing import SealError

KEY = os.urandom(32)
KEYS = {"k1": KEY}


def seal(data: bytes, cuts: list[int], blob_key: str = "u/a/b") -> bytes:
    s = BlobSealer("k1", KEY, blob_key)
    out, at = bytearray(s.header), 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += s.feed(data[at:cut])
        at = cut
    out += s.feed(data[at:]) + s.finish()
    return bytes(out)


def pieces(blob: bytes, size: int) -> list[bytes]:
    return [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3 * SEGMENT + 5), st.lists(st.integers(0, 10**6), max_size=5),
       st.sampled_from([1, 7, 1000, SEGMENT, SEGMENT + 16, 300_000]))
def test_opens_to_the_same_bytes_however_it_is_cut(n: int, cuts: list[int],
                                                   read: int) -> None:
    data = os.urandom(n)
    blob = seal(data, cuts)
    header = len(BlobSealer("k1", KEY, "x").header)
    assert len(blob) == header + sealed_size(n)
    assert open_all(KEYS, "u/a/b", iter(pieces(blob, read))) == data


def test_cut_short_at_a_segment_boundary_is_refused() -> None:
    blob = seal(os.urandom(2 * SEGMENT + 10), [])
    header = len(blob) - sealed_size(2 * SEGMENT + 10)
    cut = blob[:header + 2 * (SEGMENT + 16)]  # two whole segments, the last one gone
    with pytest.raises(SealError):
        open_all(KEYS, "u/a/b", iter([cut]))


def test_reordered_extended_or_moved_is_refused() -> None:
    blob = seal(os.urandom(2 * SEGMENT + 10), [])
    header = len(blob) - sealed_size(2 * SEGMENT + 10)
    body = blob[header:]
    s1, s2 = body[:SEGMENT + 16], body[SEGMENT + 16:2 * (SEGMENT + 16)]
    with pytest.raises(SealError):
        open_all(KEYS, "u/a/b", iter([blob[:header] + s2 + s1 + body[2 * (SEGMENT + 16):]]))
    with pytest.raises(SealError):
        open_all(KEYS, "u/a/b", iter([blob + b"x" * 17]))
    with pytest.raises(SealError):
        open_all(KEYS, "u/other/key", iter([blob]))


def test_an_unknown_key_or_plain_bytes_say_so() -> None:
    blob = seal(b"hello", [])
    with pytest.raises(SealError, match="not in the keyring"):
        open_all({"k2": KEY}, "u/a/b", iter([blob]))
    with pytest.raises(SealError, match="not a sealed blob"):
        BlobOpener(KEYS, "u/a/b").feed(b"\x89PNG\r\n\x1a\n")
