"""Media blobs sealed at rest: AES-256-GCM over 64 KiB segments, streamed both ways.

An upload is sealed as it is spooled and opened as it is downloaded, never held
whole in memory (a video is up to 100 MiB). The layout:

    b"MSB1" | len(key id) (1 byte) | key id | nonce prefix (8 bytes)
    segment 0 | segment 1 | ... | last segment        (each: ciphertext | tag (16))

Every segment but the last holds exactly `SEGMENT` bytes of plain text. Segment i
is sealed with the nonce `prefix | i` (4 bytes, big-endian) and associated data
naming the blob's key, i, and whether it is the last: segments cannot be
reordered, moved to another blob, dropped from the end or appended to
(the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár).

Pure: keys and bytes in, bytes out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.core.sealing import SealError

MAGIC = b"MSB1"
SEGMENT = 64 * 1024
TAG = 16
SEALED_SEGMENT = SEGMENT + TAG


def _aad(key: str, index: int, last: bool) -> bytes:
    return b"blob\x00" + key.encode() + struct.pack(">IB", index, 1 if last else 0)


def sealed_size(plain: int) -> int:
    """Bytes on disk for `plain` bytes, without the header (an empty blob has one
    empty segment)."""
    return plain + TAG * max(1, -(-plain // SEGMENT))


class BlobSealer:
    """Seals one blob's plain text, fed in any pieces, into the layout above."""

    def __init__(self, kid: str, key: bytes, blob_key: str) -> None:
        self.kid = kid
        self.aead = AESGCM(key)
        self.blob_key = blob_key
        self.prefix = os.urandom(8)
        self.header = MAGIC + bytes([len(kid.encode())]) + kid.encode() + self.prefix
        self._buf = bytearray()
        self._index = 0

    def _seal(self, data: bytes, last: bool) -> bytes:
        nonce = self.prefix + struct.pack(">I", self._index)
        out = self.aead.encrypt(nonce, data, _aad(self.blob_key, self._index, last))
        self._index += 1
        return out

    def feed(self, data: bytes) -> bytes:
        """Sealed segments that `data` completes (a full segment is held back until more
        comes: only `finish` knows which one is last)."""
        self._buf += data
        out = bytearray()
        while len(self._buf) > SEGMENT:
            out += self._seal(bytes(self._buf[:SEGMENT]), False)
            del self._buf[:SEGMENT]
        return bytes(out)

    def finish(self) -> bytes:
        out = self._seal(bytes(self._buf), True)
        self._buf.clear()
        return out


class BlobOpener:
    """Opens one sealed blob fed in any pieces; raises SealError on anything altered."""

    def __init__(self, keys: Mapping[str, bytes], blob_key: str) -> None:
        self.keys = keys
        self.blob_key = blob_key
        self.aead: AESGCM | None = None
        self.prefix = b""
        self._buf = bytearray()
        self._index = 0

    def _header(self) -> bool:
        if len(self._buf) < 5:
            return False
        if bytes(self._buf[:4]) != MAGIC:
            raise SealError("not a sealed blob")
        n = self._buf[4]
        if len(self._buf) < 5 + n + 8:
            return False
        kid = bytes(self._buf[5:5 + n]).decode("utf-8", "replace")
        key = self.keys.get(kid)
        if key is None:
            raise SealError(f"blob sealed under key {kid!r}, which is not in the keyring")
        self.aead = AESGCM(key)
        self.prefix = bytes(self._buf[5 + n:5 + n + 8])
        del self._buf[:5 + n + 8]
        return True

    def _open(self, data: bytes, last: bool) -> bytes:
        assert self.aead is not None
        nonce = self.prefix + struct.pack(">I", self._index)
        try:
            out = self.aead.decrypt(nonce, data, _aad(self.blob_key, self._index, last))
        except InvalidTag as exc:
            raise SealError(f"segment {self._index} of a sealed blob does not open") from exc
        self._index += 1
        return out

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        if self.aead is None and not self._header():
            return b""
        out = bytearray()
        while len(self._buf) > SEALED_SEGMENT:  # one more byte after it: not the last
            out += self._open(bytes(self._buf[:SEALED_SEGMENT]), False)
            del self._buf[:SEALED_SEGMENT]
        return bytes(out)

    def finish(self) -> bytes:
        if self.aead is None:
            raise SealError("a sealed blob cut short before its header ended")
        out = self._open(bytes(self._buf), True)
        self._buf.clear()
        return out


def open_all(keys: Mapping[str, bytes], blob_key: str, pieces: Iterator[bytes]) -> bytes:
    """The whole plain text of a sealed blob (tests and small blobs)."""
    opener = BlobOpener(keys, blob_key)
    out = bytearray()
    for piece in pieces:
        out += opener.feed(piece)
    return bytes(out + opener.finish())
