"""The deployment's keyring: the AES-256 keys message bodies are sealed with, on disk.

`<home>/keys/keyring.json` (0600, its folder 0700):

    {"version": 1, "current": "k3f9a01c2",
     "keys": {"k3f9a01c2": {"key": "<base64, 32 bytes>", "created": 1796...}, ...}}

`msgctl up` makes it and `msgctl keys rotate` adds a key and makes it current
(`msgctl.keyring_file` writes it; the runtimes only read it). The
runtimes re-read the file when it changes (checked at most once a second, and at
once when a value names a key they do not have), so a rotation takes effect
without restarting anything: new sends are sealed under the new key, and
everything sealed before still opens under its own.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from runtime.core.blobseal import BlobOpener, BlobSealer
from runtime.core.sealing import Sealer, SealError
from runtime.ports import Message, Send

RECHECK_S = 1.0


class KeyringError(Exception):
    """The keyring file is missing or unreadable (one line for the user)."""


def read(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or not isinstance(raw.get("keys"), dict):
            raise ValueError("not a keyring")
        return raw
    except (OSError, ValueError) as exc:
        raise KeyringError(f"cannot read the keyring {path}: {exc}") from None


def sealer_of(raw: dict[str, Any]) -> Sealer:
    try:
        keys = {kid: base64.b64decode(entry["key"], validate=True)
                for kid, entry in raw["keys"].items()}
        return Sealer(keys, str(raw["current"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyringError(f"bad keyring: {exc}") from None


class Keyring:
    """The sealer of a keyring file, re-read when the file changes."""

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._sealer = self._load()

    def _load(self) -> Sealer:
        st = self.path.stat()
        sealer = sealer_of(read(self.path))
        self._stamp = (st.st_mtime_ns, st.st_ino)
        return sealer

    def sealer(self, force: bool = False) -> Sealer:
        now = self.clock()
        if force or now - self._checked >= RECHECK_S:
            self._checked = now
            try:
                st = self.path.stat()
                if (st.st_mtime_ns, st.st_ino) != self._stamp:
                    self._sealer = self._load()
            except (OSError, KeyringError):
                pass  # a rotation half done, or the file gone: keep the keys we have
        return self._sealer

    def blob_sealer(self, blob_key: str) -> BlobSealer:
        sealer = self.sealer()
        return BlobSealer(sealer.current, sealer.keys[sealer.current], blob_key)

    def blob_opener(self, blob_key: str, kid: str) -> BlobOpener:
        keys = self.sealer().keys
        if kid not in keys:
            keys = self.sealer(force=True).keys
        return BlobOpener(keys, blob_key)

    def seal_send(self, send: Send) -> Send:
        return self.sealer().seal_send(send)

    def open_message(self, msg: Message) -> Message:
        try:
            return self.sealer().open_message(msg)
        except SealError:
            # a key rotated in after our last look: read the file now, once
            return self.sealer(force=True).open_message(msg)


_SHARED: dict[Path, Keyring] = {}


def shared(path: str | Path) -> Keyring:
    """The one `Keyring` of this process for `path`: the gateway, the media endpoint and
    push of an embedded node read the file once and look at it once a second, together."""
    key = Path(path)
    ring = _SHARED.get(key)
    if ring is None:
        ring = _SHARED[key] = Keyring(key)
    return ring
