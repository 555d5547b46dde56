"""Media endpoints: presigned POST uploads and signed downloads (aiohttp).

`MediaEndpoint` is what both families' media ports share; `BlobServer` keeps
the blobs on the embedded node's disk (runtime.media.s3 has the S3 one).
`POST /v1/blobs` takes multipart/form-data like S3's presigned POST: the
policy fields first, the file last as `file`. The policy is verified before a
byte of the file is written; the file streams to a temp file, is refused
past the policy's size, and is stored when complete (204), once per key.
`GET /v1/media/<key>?expires=..&key_id=..&signature=..` streams a blob whose
URL is signed and not expired (403 otherwise), never sniffable (`nosniff`;
media inline, anything else as an attachment). Errors are JSON
`{"error": code, "message": ...}`. It runs on its own port because the
gateway's WebSocket server cannot read request bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import BodyPartReader, web
from prometheus_client import Counter

from runtime.core import media as core
from runtime.core.blobseal import BlobOpener, BlobSealer
from runtime.core.sealing import SealError
from runtime.keyring import Keyring
from runtime.media.store import BlobInfo, LocalBlobStore
from runtime.metrics import METRICS

log = logging.getLogger("msgctl.media")

CHUNK = 256 * 1024
MAX_FIELD = 8192
MAX_FIELDS = 32
STATUS = {"bad_request": 400, "EntityTooLarge": 400, "EntityTooSmall": 400,
          "forbidden": 403, "not_found": 404, "unavailable": 503}
USED = "this upload slot was used already; ask for a new one"


# on the node's /metrics (the gateway port) beside the other runtimes' metrics
UPLOADS = Counter("msgctl_media_uploads", "Presigned POSTs to the blob endpoint by outcome",
                  ["outcome"], registry=METRICS.registry)
UPLOAD_BYTES = Counter("msgctl_media_upload_bytes", "Bytes of blobs stored",
                       registry=METRICS.registry)
DOWNLOADS = Counter("msgctl_media_downloads", "Signed GETs of blobs by outcome", ["outcome"],
                    registry=METRICS.registry)


def _error(code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=STATUS.get(code, 400))


def delivery_headers(content_type: str) -> dict[str, str]:
    """The headers of a served blob: browsers must not guess a type (a text/plain upload
    rendered as HTML in the media origin); media shows inline, anything else downloads."""
    inline = content_type.split("/", 1)[0] in ("image", "video", "audio")
    return {"Content-Type": content_type, "Cache-Control": "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline" if inline else "attachment"}


class MediaEndpoint:
    """A media port: `POST /v1/blobs` and signed `GET /v1/media/<key>` (both counted) and
    `/healthz` on aiohttp.

    Subclasses store a checked upload (`store_upload`, after `read_slot`) and serve the
    blob (`download`, after `signed_key`) where they keep it, and may add routes."""

    def __init__(self, secret: bytes, host: str, port: int,
                 clock: Callable[[], float]) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.clock = clock
        self.runner: web.AppRunner | None = None
        self.ready = False
        self.tls: ssl.SSLContext | None = None  # set before start: https:// (topology `tls:`)
        # set before start: blobs sealed at rest with the deployment's keyring
        self.keyring: Keyring | None = None
        self.app = web.Application()
        self.app.router.add_get("/v1/media/{key:.+}", self.counted_download)
        self.app.router.add_post("/v1/blobs", self.counted_upload)
        self.app.router.add_get("/healthz", self.health)

    def describe(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port, backlog=1024,
                          ssl_context=self.tls).start()
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

    async def counted_upload(self, request: web.Request) -> web.Response:
        resp = await self.upload(request)
        UPLOADS.labels("stored" if resp.status == 204 else f"refused_{resp.status}").inc()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        form = await self.read_slot(request)
        if isinstance(form, web.Response):
            return form
        return await self.store_upload(*form)

    async def store_upload(self, grant: core.PostGrant, file: BodyPartReader) -> web.Response:
        """Store the `file` part (not read yet) of a POST whose slot is `grant`: 204 or why
        not. A key is written once: replaying a slot must not swap what was sent."""
        raise NotImplementedError

    async def read_slot(self, request: web.Request
                        ) -> tuple[core.PostGrant, BodyPartReader] | web.Response:
        """The verified upload slot of a presigned POST and its `file` part, unread, or the
        refusal to send. Nothing of the file is read before the policy checks out."""
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
        grant = core.verify_post(self.secret, fields, int(self.clock()))
        if isinstance(grant, core.Refusal):
            return _error(grant.code, grant.message)
        return grant, part

    def blob_sealer(self, key: str) -> BlobSealer | None:
        """How an upload of `key` is sealed (None: stored as it comes)."""
        return None if self.keyring is None else self.keyring.blob_sealer(key)

    async def spool(self, grant: core.PostGrant, file: BodyPartReader, path: Path,
                    sealer: BlobSealer | None = None) -> int | web.Response:
        """Write the file part to `path` (sealed as it comes, with `sealer`): its size in
        plain bytes, or the refusal when it is outside the slot's size range (reading
        stops at the first byte past it)."""
        size = 0
        with path.open("wb") as fh:
            if sealer is not None:
                fh.write(sealer.header)
            while True:
                chunk = await file.read_chunk(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > grant.max_size:
                    break
                fh.write(chunk if sealer is None else sealer.feed(chunk))
            if sealer is not None and size <= grant.max_size:
                fh.write(sealer.finish())
        refusal = core.check_size(grant, size)
        if refusal is not None:
            return _error(refusal.code, refusal.message)
        return size

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


async def stream_opened(request: web.Request, opener: BlobOpener, size: int,
                        content_type: str, read: Callable[[], bytes]) -> web.StreamResponse:
    """Serve a sealed blob's plain text (`size` bytes), opened segment by segment as `read`
    (blocking, run in a thread) returns its stored bytes. A blob that does not open ends
    the response short, which the client sees as a failed download, never as content."""
    resp = web.StreamResponse(status=200, headers=delivery_headers(content_type))
    resp.content_length = size
    await resp.prepare(request)
    try:
        while True:
            piece = await asyncio.to_thread(read)
            if not piece:
                break
            out = opener.feed(piece)
            if out:
                await resp.write(out)
        await resp.write(opener.finish())
    except SealError as exc:
        log.error("download of %s cut short: %s", opener.blob_key, exc)
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


class BlobServer(MediaEndpoint):
    def __init__(self, store: LocalBlobStore, host: str, port: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store.secret, host, port, clock)
        self.store = store

    def describe(self) -> str:
        return (f"blob endpoint on {'https' if self.tls else 'http'}://{self.host}:{self.port} "
                f"(store {self.store.root})")

    async def store_upload(self, grant: core.PostGrant, file: BodyPartReader) -> web.Response:
        tmp = self.store.temp()
        sealer = self.blob_sealer(grant.key)
        try:
            size = await self.spool(grant, file, tmp, sealer)
            if isinstance(size, web.Response):
                return size
            kid = "" if sealer is None else sealer.kid
            if not self.store.commit(tmp, BlobInfo(grant.key, grant.content_type, size,
                                                   sealed=kid)):
                return _error("forbidden", USED)
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
        if not info.sealed:  # stored before sealing was on
            return web.FileResponse(path, chunk_size=CHUNK,
                                    headers=delivery_headers(info.content_type))
        if self.keyring is None:
            return _error("unavailable", "blob is sealed and this node has no keyring")
        opener = self.keyring.blob_opener(key, info.sealed)
        with path.open("rb") as fh:
            return await stream_opened(request, opener, info.size, info.content_type,
                                       lambda: fh.read(CHUNK))
