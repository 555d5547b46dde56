"""Media blobs on any S3 endpoint (cluster family): presigned POSTs to S3, signed downloads.

`S3BlobStore` has the embedded store's interface (`presign`, `head`): the
upload slot is boto3's `generate_presigned_post` pinning the key, the content
type and a content-length-range, expiring with the slot. `head` is a
HeadObject, so `send` sees the size and content type S3 really stored: S3Proxy
does not enforce POST policy conditions (real S3 does), and the send-time checks
of `MediaService.attach` are what hold the contract there.

`S3MediaServer` serves `GET /v1/media/<key>?expires=..&key_id=..&signature=..`
(the same CloudFront-style URLs as the embedded endpoint): the signature is
checked, then the object streams from S3 in chunks, never whole in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import boto3
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.config import EnginesConfig
from runtime.media.endpoint import CHUNK, MediaEndpoint, _error
from runtime.media.store import BlobInfo, BlobStoreDown

log = logging.getLogger("msgctl.media")

MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def s3_client(endpoint: str, access_key: str, secret_key: str, region: str,
              timeout: float = 10.0) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region,
        config=Config(signature_version="s3v4", connect_timeout=timeout, read_timeout=timeout,
                      max_pool_connections=64, retries={"max_attempts": 3, "mode": "standard"},
                      # no default CRC trailers (boto3 >= 1.36): S3Proxy and other
                      # S3-compatible servers answer NotImplemented to them
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required",
                      s3={"addressing_style": "path"}))


class S3BlobStore:
    def __init__(self, client: Any, bucket: str, secret: bytes) -> None:
        self.client = client
        self.bucket = bucket
        self.secret = secret  # signs download URLs (checked by S3MediaServer)

    @classmethod
    def from_config(cls, engines: EnginesConfig, secret: bytes) -> S3BlobStore:
        client = s3_client(engines.s3_endpoint, engines.s3_access_key, engines.s3_secret_key,
                           engines.s3_region)
        return cls(client, engines.s3_bucket, secret)

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
        # boto3 dates the policy itself (now is the same clock)
        post = self.client.generate_presigned_post(
            self.bucket, key, Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type},
                        ["content-length-range", 1, max_size]],
            ExpiresIn=ttl_s)
        return post["url"], {k: str(v) for k, v in post["fields"].items()}

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
        return BlobInfo(key, ctype, int(meta["ContentLength"]))

    async def head(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._head, key)

    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in MISSING:
                return None
            raise BlobStoreDown(f"S3 GetObject: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreDown(f"S3 unreachable: {exc}") from exc

    async def open(self, key: str) -> Any:
        """GetObject's response (its Body streams), or None when there is no such object."""
        return await asyncio.to_thread(self._get, key)


class S3MediaServer(MediaEndpoint):
    """A gateway process's media port: signed downloads streamed from S3 (uploads go to S3)."""

    def __init__(self, store: S3BlobStore, host: str, port: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store.secret, host, port, clock)
        self.store = store

    def describe(self) -> str:
        return f"media endpoint on http://{self.host}:{self.port} (s3 bucket {self.store.bucket})"

    async def download(self, request: web.Request) -> web.StreamResponse:
        key, refused = self.signed_key(request)
        if refused is not None:
            return refused
        try:
            obj = await self.store.open(key)
        except BlobStoreDown as exc:
            log.warning("download %s: %s", key, exc)
            return web.json_response({"error": "unavailable", "message": "blob store "
                                      "unreachable, retry"}, status=503)
        if obj is None:
            return _error("not_found", "no such blob")
        body = obj["Body"]
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": str(obj.get("ContentType") or "application/octet-stream"),
            "Cache-Control": "private, max-age=3600"})
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
