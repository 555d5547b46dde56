"""Media blobs on any S3 endpoint (cluster family): uploads through the gateways, S3 behind.

Clients never get anything that can write to S3. An upload slot is the same
presigned POST as on the embedded family, to the gateway's own media port
(`POST /v1/blobs`, `S3MediaServer`), which checks the signed policy to the
letter (key, content type, size range, expiry), spools the file to disk and
PUTs it to S3 itself, once per key. A presigned POST straight to S3 would be
checked by the S3 server alone, and S3Proxy 2.6.0 checks only its signature:
not the key, content type, size or expiry, so any slot could write any key.

`S3BlobStore` has the embedded store's interface (`presign`, `head`); `head` is
a HeadObject, so `send` sees the size, content type and ETag S3 really stored.
`S3MediaServer` serves `GET /v1/media/<key>?expires=..&key_id=..&signature=..`
(the embedded endpoint's CloudFront-style URLs). The URL signed at `send` also
pins the object (`etag`, `type`, runtime.core.media.Pinned): it is fetched with
If-Match on that ETag and served as that type, so an object that anything
replaced after the send (a leaked S3 credential, an old SigV4 POST) is never
served under it. The object streams from S3 in chunks, never whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from aiohttp import BodyPartReader, web
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.config import EnginesConfig
from runtime.core import media as core
from runtime.media.endpoint import (
    CHUNK,
    UPLOAD_BYTES,
    USED,
    MediaEndpoint,
    _error,
    delivery_headers,
    stream_opened,
)
from runtime.media.store import BlobInfo, BlobStoreDown

log = logging.getLogger("msgctl.media")

MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
# a conditional request that did not hold: the object exists (PUT If-None-Match) or is
# not the one pinned (GET If-Match)
CHANGED = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code"))


def unquote_etag(raw: Any) -> str:
    return str(raw or "").strip('"')


def s3_client(endpoint: str, access_key: str, secret_key: str, region: str,
              timeout: float = 10.0, verify: str | bool = True) -> Any:
    """`verify`: the CA file an https endpoint's certificate must chain to (msgctl's
    deployment CA for a provisioned S3Proxy), or True for the system's roots."""
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region, verify=verify,
        config=Config(signature_version="s3v4", connect_timeout=timeout, read_timeout=timeout,
                      max_pool_connections=64, retries={"max_attempts": 3, "mode": "standard"},
                      # no default CRC trailers (boto3 >= 1.36): S3Proxy and other
                      # S3-compatible servers answer NotImplemented to them
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required",
                      s3={"addressing_style": "path"}))


def _verify(engines: EnginesConfig) -> str | bool:
    """An https endpoint msgctl provisioned has a certificate from the deployment CA."""
    ca = engines.engine_ca.get("s3", engines.tls_ca)  # "" for an external one: system roots
    return ca if engines.s3_endpoint.startswith("https://") and ca else True


class S3BlobStore:
    """The media bucket; files being received wait in `tmp` (this process's own folder,
    emptied at start: uploads cut short by a crash or a stop) until their PUT."""

    def __init__(self, client: Any, bucket: str, secret: bytes, tmp: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.secret = secret  # signs upload slots and download URLs (S3MediaServer checks)
        self.tmp = tmp
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()

    @classmethod
    def from_config(cls, engines: EnginesConfig, secret: bytes, tmp: Path) -> S3BlobStore:
        client = s3_client(engines.s3_endpoint, engines.s3_access_key, engines.s3_secret_key,
                           engines.s3_region, verify=_verify(engines))
        return cls(client, engines.s3_bucket, secret, tmp)

    def _ensure_bucket(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in MISSING:
                raise
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:  # another gateway made it first
            if exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return True

    async def ensure_bucket(self) -> None:
        """Create the media bucket unless it exists (the gateways race for it harmlessly)."""
        if await asyncio.to_thread(self._ensure_bucket):
            log.info("created bucket %s", self.bucket)

    def presign(self, base: str, key: str, content_type: str, max_size: int, now: int,
                ttl_s: int) -> tuple[str, dict[str, str]]:
        # a POST to the gateway's media port, which enforces the policy itself: never one
        # straight to S3, whose conditions S3Proxy does not check (see the module doc)
        fields = core.presign_post(self.secret, key, content_type, max_size, now, ttl_s)
        return f"{base.rstrip('/')}/v1/blobs", fields

    def temp(self) -> Path:
        return self.tmp / uuid.uuid4().hex

    def _head(self, key: str) -> BlobInfo | None:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in MISSING:
                return None
            raise BlobStoreDown(f"S3 HeadObject: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreDown(f"S3 unreachable: {exc}") from exc
        ctype = str(meta.get("ContentType") or "application/octet-stream").lower()
        etag = unquote_etag(meta.get("ETag"))
        if not core.ETAG_RE.match(etag):  # nothing to pin a download URL to: fail closed
            raise BlobStoreDown(f"S3 HeadObject: unusable ETag {etag[:80]!r}")
        size, sealed = _plain(meta)
        return BlobInfo(key, ctype, size, etag, sealed)

    async def head(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._head, key)

    def _put(self, key: str, path: Path, content_type: str, size: int,
             sealed: str) -> str | None:
        # a sealed object is larger than its plain text: S3 gets the file's length, and
        # the plain size and key id go in the object's metadata
        extra = {"Metadata": {"plain-size": str(size), "sealed": sealed}} if sealed else {}
        try:
            with path.open("rb") as fh:
                # If-None-Match makes the write once-only on S3 (atomically); S3Proxy 2.6.0
                # ignores it, and S3MediaServer checks with HeadObject before
                resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=fh,
                                              ContentLength=path.stat().st_size,
                                              ContentType=content_type, IfNoneMatch="*",
                                              **extra)
        except ClientError as exc:
            if _code(exc) in CHANGED:
                return None
            raise BlobStoreDown(f"S3 PutObject: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreDown(f"S3 unreachable: {exc}") from exc
        return unquote_etag(resp.get("ETag"))

    async def put(self, key: str, path: Path, content_type: str, size: int,
                  sealed: str = "") -> str | None:
        """Store the file at `path` (`size` plain bytes; sealed under key id `sealed`, if
        any) as `key`: its ETag, or None when the key exists."""
        return await asyncio.to_thread(self._put, key, path, content_type, size, sealed)

    def _get(self, key: str, etag: str | None) -> Any:
        extra = {} if etag is None else {"IfMatch": f'"{etag}"'}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            if _code(exc) in MISSING or _code(exc) in CHANGED:
                return None
            raise BlobStoreDown(f"S3 GetObject: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreDown(f"S3 unreachable: {exc}") from exc

    async def open(self, key: str, etag: str | None = None) -> Any:
        """GetObject's response (its Body streams), or None when there is no such object
        (or, with `etag`, when the object is not that one any more)."""
        return await asyncio.to_thread(self._get, key, etag)


class S3MediaServer(MediaEndpoint):
    """A gateway process's media port: presigned POSTs written to S3, signed downloads
    streamed from S3. Every gateway's port takes any gateway's slots and URLs."""

    def __init__(self, store: S3BlobStore, host: str, port: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store.secret, host, port, clock)
        self.store = store
        self.writing: set[str] = set()  # keys being uploaded through this process

    def _unavailable(self, what: str, key: str, exc: BlobStoreDown) -> web.Response:
        log.warning("%s %s: %s", what, key, exc)
        return _error("unavailable", "blob store unreachable, retry")

    async def _written(self, key: str) -> web.Response | None:
        """The refusal when `key` was stored already (or S3 does not answer), else None."""
        try:
            exists = await self.store.head(key) is not None
        except BlobStoreDown as exc:
            return self._unavailable("upload", key, exc)
        return _error("forbidden", USED) if exists else None

    async def store_upload(self, grant: core.PostGrant, file: BodyPartReader) -> web.Response:
        key = grant.key
        if key in self.writing:  # the same slot, twice at once
            return _error("forbidden", USED)
        self.writing.add(key)
        tmp = self.store.temp()
        try:
            # S3Proxy ignores the PUT's If-None-Match (S3 honours it): look before taking
            # the file and again before the PUT, so a replayed slot is refused and the
            # window left between gateway processes is the PUT itself (a download URL
            # pins the ETag it was sent with, so a write in that window is never served)
            refused = await self._written(key)
            if refused is not None:
                return refused
            sealer = self.blob_sealer(key)
            size = await self.spool(grant, file, tmp, sealer)
            if isinstance(size, web.Response):
                return size
            refused = await self._written(key)
            if refused is not None:
                return refused
            try:
                etag = await self.store.put(key, tmp, grant.content_type, size,
                                            "" if sealer is None else sealer.kid)
            except BlobStoreDown as exc:
                return self._unavailable("upload", key, exc)
            if etag is None:
                return _error("forbidden", USED)
            UPLOAD_BYTES.inc(size)
        finally:
            self.writing.discard(key)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return web.Response(status=204, headers={"ETag": f'"{etag}"'})

    def describe(self) -> str:
        return (f"media endpoint on {'https' if self.tls else 'http'}://{self.host}:{self.port} "
                f"(s3 bucket {self.store.bucket})")

    async def download(self, request: web.Request) -> web.StreamResponse:
        key, refused = self.signed_key(request)
        if refused is not None:
            return refused
        pin = core.pin_of(dict(request.query))  # signed with the URL (signed_key checked it)
        if isinstance(pin, core.Refusal):
            return _error(pin.code, pin.message)
        try:
            obj = await self.store.open(key, None if pin is None else pin.etag)
        except BlobStoreDown as exc:
            return self._unavailable("download", key, exc)
        if obj is not None and pin is not None and unquote_etag(obj.get("ETag")) != pin.etag:
            obj["Body"].close()  # a server that ignored If-Match: refuse it here
            obj = None
        if obj is None:
            return _error("not_found", "no such blob" if pin is None else
                          "no such blob, or not the one that was sent")
        body = obj["Body"]
        # a pinned URL is served as the type checked at send, whatever S3 says now; an
        # unpinned one (the uploader's own, from upload_url) as S3 has it
        ctype = pin.content_type if pin is not None else str(
            obj.get("ContentType") or "application/octet-stream")
        size, sealed = _plain(obj)
        if sealed:
            if self.keyring is None:
                body.close()
                return _error("unavailable", "blob is sealed and this node has no keyring")
            try:
                return await stream_opened(request, self.keyring.blob_opener(key, sealed),
                                           size, ctype, lambda: body.read(CHUNK))
            finally:
                body.close()
        resp = web.StreamResponse(status=200, headers=delivery_headers(ctype))
        resp.content_length = int(obj["ContentLength"])
        try:
            await resp.prepare(request)
            while True:
                chunk = await asyncio.to_thread(body.read, CHUNK)
                if not chunk:
                    break
                await resp.write(chunk)
            await resp.write_eof()
        finally:
            body.close()
        return resp


def _plain(meta: Any) -> tuple[int, str]:
    """An object's plain size and the key id it is sealed under ("" when stored plain),
    from a HeadObject or GetObject answer."""
    user = meta.get("Metadata") or {}
    sealed = str(user.get("sealed") or "")
    try:
        size = int(user["plain-size"]) if sealed else int(meta["ContentLength"])
    except (KeyError, ValueError):
        size = int(meta["ContentLength"])
    return size, sealed
