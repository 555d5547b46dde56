"""Blob stores behind the presigned contract: the embedded one keeps blobs in a directory.

Each blob is a data file and a JSON sidecar (content type, size), both named by
the SHA-256 of the key, so no client-chosen text ever becomes a path. The
sidecar is renamed into place last: a blob with a sidecar is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtime.core import media as core


@dataclass(frozen=True)
class BlobInfo:
    key: str
    content_type: str
    size: int
    # S3's ETag (unquoted): download URLs signed at `send` pin it, so an object replaced
    # later is not served under them. "" for the local store, whose blobs are written once.
    etag: str = ""
    # the keyring key id the blob is sealed under (`runtime.core.blobseal`); "": plain
    sealed: str = ""


class BlobStoreDown(Exception):
    """The blob store did not answer (S3 unreachable or failing): `send` may be retried."""


class BlobStore(Protocol):
    def presign(self, base: str, key: str, content_type: str, max_size: int, now: int,
                ttl_s: int) -> tuple[str, dict[str, str]]:
        """The URL and form fields of a presigned POST for `key`."""
        ...

    async def head(self, key: str) -> BlobInfo | None:
        ...


class LocalBlobStore:
    """Blobs under `root` (<data dir>/blobs); uploads in progress under tmp-<writer>/.

    Each node writing here (one per region of a home) has its own temp folder,
    so one starting never removes another's uploads in progress."""

    def __init__(self, root: Path, secret: bytes, writer: str = "node") -> None:
        self.root = root
        self.secret = secret
        self.tmp = root / f"tmp-{writer}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # uploads cut short by a crash or a stop
            with contextlib.suppress(OSError):
                stale.unlink()

    def presign(self, base: str, key: str, content_type: str, max_size: int, now: int,
                ttl_s: int) -> tuple[str, dict[str, str]]:
        fields = core.presign_post(self.secret, key, content_type, max_size, now, ttl_s)
        return f"{base.rstrip('/')}/v1/blobs", fields

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / digest

    def _head(self, key: str) -> BlobInfo | None:
        try:
            meta = json.loads(self.path(key).with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != key:
            return None
        return BlobInfo(key, meta["content_type"], meta["size"], sealed=meta.get("sealed", ""))

    async def head(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._head, key)

    def temp(self) -> Path:
        return self.tmp / uuid.uuid4().hex

    def commit(self, tmp: Path, info: BlobInfo) -> bool:
        """Put a fully written temp file in place, then its sidecar; False if the key exists.

        A key is written once: replaying the same upload slot must not swap the content
        that recipients have already been sent (the link fails if the file exists).
        """
        final = self.path(info.key)
        final.parent.mkdir(exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(json.dumps({"key": info.key, "content_type": info.content_type,
                                        "size": info.size, "sealed": info.sealed}))
        os.replace(meta_tmp, final.with_suffix(".json"))
        return True
