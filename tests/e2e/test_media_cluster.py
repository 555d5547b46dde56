"""Media on the cluster family: upload slots are presigned POSTs straight to S3Proxy (the
region's `s3` engine), `send` checks the object with HeadObject, and each gateway process
serves signed downloads on its own media port, streamed from S3.

S3Proxy does not enforce POST policy conditions, so a wrong content type or an oversize
file is taken at POST; these tests show `send` refusing them instead."""

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
    """The presigned POST as browsers and httpx send it. (S3Proxy's multipart parser answers
    400 to aiohttp's FormData, which puts Content-Type before Content-Disposition.)"""
    async with httpx.AsyncClient(timeout=60) as http:
        resp = await http.post(url, data=fields, files={"file": ("blob", data, file_type)})
        return resp.status_code, resp.text


async def uploaded(c: Client, data: bytes = PNG, **kw: Any) -> dict[str, Any]:
    reply = await slot(c, size=len(data), **kw)
    status, body = await post(reply["upload"]["url"], reply["upload"]["fields"], data)
    assert status == 204, body
    return reply


def s3_url(dep: Deployment) -> str:
    return f"http://127.0.0.1:{dep.port + 26}/{BUCKET}"


async def test_cluster_upload_send_deliver_download(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice, "phone"))
    a2 = await Client.open(dep.gateway_url(1), dep.token(alice, "laptop"))
    b = await Client.open(dep.gateway_url(1), dep.token(bob, "phone"))
    conv = (await a.create([bob]))["conv"]
    reply = await slot(a)
    up, media = reply["upload"], reply["media"]
    assert up["url"] == s3_url(dep)  # the client POSTs to S3, never through the gateway
    fields = up["fields"]
    assert fields["key"] == media["key"] and media["key"].startswith(f"u/{alice}/")
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256" and fields["Content-Type"] == (
        "image/png")
    assert media["url"].startswith(f"http://127.0.0.1:{dep.port + 27}/v1/media/")
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
        # signed once, at send, by the sender's gateway; every gateway's media port serves it
        assert got["url"].startswith(f"http://127.0.0.1:{dep.port + 27}/v1/media/")
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
    """10 MB through the presigned POST to S3Proxy and back through the gateway, streamed."""
    dep = cluster_deployment
    a = await Client.open(dep.gateway_url(0), dep.token(uid("big")))
    data = os.urandom(10 * 1000 * 1000)
    reply = await slot(a, size=len(data))
    t0 = time.perf_counter()
    status, _ = await post(reply["upload"]["url"], reply["upload"]["fields"], data, "image/png")
    took = time.perf_counter() - t0
    assert status == 204
    print(f"presigned POST of 10 MB to S3Proxy: {took:.2f} s, {10 / took:.1f} MB/s")
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

    async def what_s3proxy_lets_through(refused: Refuse) -> None:
        # S3Proxy takes a POST that breaks the policy; send is where it is caught
        html = await slot(a)
        status, _ = await post(html["upload"]["url"],
                               html["upload"]["fields"] | {"Content-Type": "text/html"},
                               b"<script>alert(1)</script>", "text/html")
        assert status == 204  # real S3 would answer 403 here
        await refused(html["media"], "bad_frame", "does not match the uploaded blob (text/html)")
        await refused({"key": html["media"]["key"]}, "bad_frame",
                      "text/html blob cannot be sent as kind 'image'")
        small = await slot(a, size=100)
        ceiling = m.DEFAULT_MAX_BYTES["image"]
        status, _ = await post(small["upload"]["url"], small["upload"]["fields"],
                               b"\0" * (ceiling + 1), "image/png")
        assert status == 204  # S3Proxy ignores content-length-range
        await refused({"key": small["media"]["key"]}, "too_large",
                      f"image media are limited to {ceiling} bytes")

    await check_send_refusals(a, b, uploaded, what_s3proxy_lets_through)
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
