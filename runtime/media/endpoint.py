"""The embedded blob endpoint: presigned POST uploads and signed downloads (aiohttp).

`POST /v1/blobs` takes multipart/form-data like S3's presigned POST: the
policy fields first, the file last as `file`. The policy is verified before a
byte of the file is written; the file streams to a temp file, is refused
past the policy's size, and is moved into place when complete (204).
`GET /v1/media/<key>?expires=..&key_id=..&signature=..` streams a blob whose
URL is signed and not expired (403 otherwise). Errors are JSON
`{"error": code, "message": ...}`. It runs on its own port because the
gateway's WebSocket server cannot read request bodies.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import BodyPartReader, web
from prometheus_client import Counter

from runtime.core import media as core
from runtime.media.store import BlobInfo, LocalBlobStore
from runtime.metrics import METRICS

log = logging.getLogger("msgctl.media")

CHUNK = 256 * 1024
MAX_FIELD = 8192
MAX_FIELDS = 32
STATUS = {"bad_request": 400, "EntityTooLarge": 400, "EntityTooSmall": 400,
          "forbidden": 403, "not_found": 404}


# on the node's /metrics (the gateway port) beside the other runtimes' metrics
UPLOADS = Counter("msgctl_media_uploads", "Presigned POSTs to the blob endpoint by outcome",
                  ["outcome"], registry=METRICS.registry)
UPLOAD_BYTES = Counter("msgctl_media_upload_bytes", "Bytes of blobs stored",
                       registry=METRICS.registry)
DOWNLOADS = Counter("msgctl_media_downloads", "Signed GETs of blobs by outcome", ["outcome"],
                    registry=METRICS.registry)


def _error(code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=STATUS.get(code, 400))


class MediaEndpoint:
    """A media port: signed `GET /v1/media/<key>` (counted) and `/healthz` on aiohttp.

    Subclasses serve the blob (`download`, after `signed_key`) from where they keep it,
    and may add routes."""

    def __init__(self, secret: bytes, host: str, port: int,
                 clock: Callable[[], float]) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.clock = clock
        self.runner: web.AppRunner | None = None
        self.ready = False
        self.app = web.Application()
        self.app.router.add_get("/v1/media/{key:.+}", self.counted_download)
        self.app.router.add_get("/healthz", self.health)

    def describe(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port, backlog=1024).start()
        self.ready = True
        log.info("%s", self.describe())

    async def stop(self) -> None:
        self.ready = False
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def counted_download(self, request: web.Request) -> web.StreamResponse:
        resp = await self.download(request)
        DOWNLOADS.labels("served" if resp.status == 200 else f"refused_{resp.status}").inc()
        return resp

    async def download(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def signed_key(self, request: web.Request) -> tuple[str, web.Response | None]:
        """The requested key, and the refusal to send instead when the URL's signature
        is bad or expired, or the key cannot name a blob."""
        key = request.match_info["key"]  # keys have no %-escapes: decoded == raw
        refusal = core.verify_url([self.secret], key, dict(request.query), int(self.clock()))
        if refusal is not None:
            return key, _error(refusal.code, refusal.message)
        if not core.valid_key(key):
            return key, _error("not_found", "no such blob")
        return key, None


class BlobServer(MediaEndpoint):
    def __init__(self, store: LocalBlobStore, host: str, port: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store.secret, host, port, clock)
        self.store = store
        self.app.router.add_post("/v1/blobs", self.counted_upload)

    def describe(self) -> str:
        return f"blob endpoint on http://{self.host}:{self.port} (store {self.store.root})"

    async def counted_upload(self, request: web.Request) -> web.Response:
        resp = await self.upload(request)
        UPLOADS.labels("stored" if resp.status == 204 else f"refused_{resp.status}").inc()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return _error("bad_request", "send multipart/form-data: the fields, then 'file'")
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError) as exc:
            return _error("bad_request", f"not multipart/form-data: {exc}")
        fields: dict[str, str] = {}
        parts = 0  # parts, not names: repeating one name must not buy an unbounded read
        while True:
            part = await reader.next()
            if part is None:
                return _error("bad_request", "no 'file' field (it must come last)")
            if not isinstance(part, BodyPartReader):
                return _error("bad_request", "nested multipart is not supported")
            name = part.name or ""
            if name == "file":
                break
            parts += 1
            if parts > MAX_FIELDS:
                return _error("bad_request", "too many form fields")
            raw = await part.read_chunk(MAX_FIELD + 1)
            if len(raw) > MAX_FIELD or not part.at_eof():
                return _error("bad_request", f"form field '{name[:50]}' is too long")
            fields[name] = raw.decode("utf-8", "replace")
        grant = core.verify_post(self.store.secret, fields, int(self.clock()))
        if isinstance(grant, core.Refusal):
            return _error(grant.code, grant.message)
        tmp = self.store.temp()
        size = 0
        try:
            with tmp.open("wb") as fh:
                while True:
                    chunk = await part.read_chunk(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > grant.max_size:
                        refusal = core.check_size(grant, size)
                        assert refusal is not None
                        return _error(refusal.code, refusal.message)
                    fh.write(chunk)
            refusal = core.check_size(grant, size)
            if refusal is not None:
                return _error(refusal.code, refusal.message)
            if not self.store.commit(tmp, BlobInfo(grant.key, grant.content_type, size)):
                return _error("forbidden", "this upload slot was used already; ask for a new one")
            UPLOAD_BYTES.inc(size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return web.Response(status=204, headers={"ETag": f'"{grant.key.rsplit("/", 1)[1]}"'})

    async def download(self, request: web.Request) -> web.StreamResponse:
        key, refused = self.signed_key(request)
        if refused is not None:
            return refused
        info = await self.store.head(key)
        if info is None:
            return _error("not_found", "no such blob")
        path: Path = self.store.path(key)
        # browsers must not guess a type (a text/plain upload rendered as HTML); media
        # shows inline, anything else downloads
        inline = info.content_type.split("/", 1)[0] in ("image", "video", "audio")
        return web.FileResponse(path, chunk_size=CHUNK, headers={
            "Content-Type": info.content_type, "Cache-Control": "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline" if inline else "attachment"})
