"""Media end to end on the embedded default: upload slot over the WebSocket, presigned POST
to the blob endpoint over real HTTP, send with media, delivery, signed download."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
import yaml

from msgctl.home import Home
from runtime.core import media as m
from tests.conftest import Deployment, free_port, msgctl, write_topology
from tests.wsclient import Client

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secret(dep: Deployment) -> bytes:
    return m.derive_secret(Home(dep.home).secret())


async def post(url: str, fields: dict[str, str], data: bytes,
               file_type: str = "application/octet-stream") -> tuple[int, Any]:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", data, filename="blob", content_type=file_type)
    async with aiohttp.ClientSession() as http, http.post(url, data=form) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def get(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def slot(c: Client, kind: str = "image", ctype: str = "image/png",
               size: int = len(PNG)) -> dict[str, Any]:
    reply = await c.request({"t": "upload", "kind": kind, "content_type": ctype, "size": size})
    assert reply["t"] == "upload_url", reply
    return reply


async def uploaded(c: Client, data: bytes = PNG, **kw: Any) -> dict[str, Any]:
    reply = await slot(c, size=len(data), **kw)
    status, body = await post(reply["upload"]["url"], reply["upload"]["fields"], data)
    assert status == 204, body
    return reply


async def still_open(c: Client) -> None:
    assert (await c.request({"t": "ping"}))["t"] == "pong"


async def test_upload_send_deliver_download(embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.ws_url, dep.token(alice, "phone"))
    a2 = await Client.open(dep.ws_url, dep.token(alice, "laptop"))
    b = await Client.open(dep.ws_url, dep.token(bob, "phone"))
    conv = (await a.create([bob]))["conv"]
    reply = await slot(a)
    up, media = reply["upload"], reply["media"]
    assert set(reply) == {"t", "id", "upload", "media"}
    assert up["url"] == f"https://127.0.0.1:{dep.port + 20}/v1/blobs"
    assert media["key"].startswith(f"u/{alice}/") and up["fields"]["key"] == media["key"]
    assert (media["content_type"], media["size"]) == ("image/png", len(PNG))
    status, _ = await post(up["url"], up["fields"], PNG, "image/png")
    assert status == 204
    sent = await a.request({"t": "send", "conv": conv, "cid": "m1", "kind": "image",
                            "body": "look", "media": media})
    assert sent["t"] == "sent", sent
    for device in (b, a2):
        msg = (await device.wait_msgs(conv, 1))[0]
        assert msg["kind"] == "image" and msg["body"] == "look"
        got = msg["media"]
        assert (got["key"], got["content_type"], got["size"]) == (
            media["key"], "image/png", len(PNG))
        status, data, ctype = await get(got["url"])
        assert (status, data, ctype) == (200, PNG, "image/png")
    history = (await b.request({"t": "sync", "conv": conv, "after": 0}))["msgs"]
    assert history[0]["media"]["key"] == media["key"]
    status, data, _ = await get(media["url"])  # the URL from upload_url works as well
    assert (status, data) == (200, PNG)
    for c in (a, a2, b):
        await c.close()


async def test_upload_url_uses_the_host_the_client_reached(
        embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    c = await Client.open(f"wss://localhost:{dep.port}/v1/ws", dep.token(uid("h")))
    reply = await slot(c)
    assert reply["upload"]["url"] == f"https://localhost:{dep.port + 20}/v1/blobs"
    assert reply["media"]["url"].startswith(f"https://localhost:{dep.port + 20}/v1/media/")
    await c.close()


@pytest.mark.parametrize(("frame", "code", "needle"), [
    ({"kind": "image", "content_type": "image/svg+xml", "size": 10}, "bad_frame",
     "not allowed for image"),
    ({"kind": "image", "content_type": "video/mp4", "size": 10}, "bad_frame", "allowed:"),
    ({"kind": "image", "content_type": "image/png", "size": 10 * m.MiB + 1}, "too_large",
     "limited to 10485760 bytes"),
    ({"kind": "video", "content_type": "video/mp4", "size": 100 * m.MiB + 1}, "too_large",
     "limited to"),
    ({"kind": "text", "content_type": "text/plain", "size": 10}, "bad_frame",
     "cannot be uploaded"),
    ({"kind": "image", "content_type": "image/png"}, "bad_frame", "missing field 'size'"),
])
async def test_upload_refusals(embedded_deployment: Deployment, frame: dict[str, Any],
                               code: str, needle: str) -> None:
    c = await Client.open(embedded_deployment.ws_url, embedded_deployment.token(uid("u")))
    reply = await c.request({"t": "upload", **frame})
    assert reply["t"] == "error" and reply["code"] == code, reply
    assert needle in reply["message"]
    await still_open(c)
    await c.close()


async def test_presigned_post_refusals(embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    c = await Client.open(dep.ws_url, dep.token(uid("p")))
    reply = await slot(c)
    url, fields = reply["upload"]["url"], reply["upload"]["fields"]
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({**fields, "Content-Type": "text/html"}, PNG, 403, "Content-Type"),
        ({**fields, "key": fields["key"][:-1] + ("1" if fields["key"][-1] == "0" else "0")},
         PNG, 403, "key"),
        ({**fields, "x-amz-signature": "0" * 64}, PNG, 403, "signature"),
        ({k: v for k, v in fields.items() if k != "policy"}, PNG, 400, "policy"),
        (fields, PNG + b"!", 400, "exceeds"),
    ]
    # a correctly signed policy that expired a minute ago
    expired = m.presign_post(secret(dep), fields["key"], "image/png", len(PNG),
                             int(time.time()) - 960, 900)
    cases.append((expired, PNG, 403, "expired"))
    for form, data, status, needle in cases:
        got_status, body = await post(url, form, data)
        assert got_status == status and needle in body["message"], (form, body)
    # nothing was stored: the key cannot be sent
    conv = (await c.create([uid("q")]))["conv"]
    sent = await c.request({"t": "send", "conv": conv, "cid": "x", "kind": "image", "body": "",
                            "media": reply["media"]})
    assert sent["t"] == "error" and sent["code"] == "bad_frame"
    assert "never uploaded" in sent["message"]
    # not multipart; no file
    async with aiohttp.ClientSession() as http, http.post(url, data=b"x") as resp:
        assert resp.status == 400
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("other", "x")
    async with aiohttp.ClientSession() as http, http.post(url, data=form) as resp:
        assert resp.status == 400 and "file" in (await resp.json())["message"]
    await c.close()


async def check_download_refusals(dep: Deployment, c: Client,
                                  upload: Callable[[Client], Awaitable[dict[str, Any]]],
                                  ) -> SplitResult:
    """A forged, stretched, unsigned, expired or reused signed URL is 403, the right one
    200, a signed URL of a missing key 404; returns the parts of the good URL."""
    reply = await upload(c)
    url = reply["media"]["url"]
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    key = reply["media"]["key"]
    query = dict(parse_qsl(parts.query))

    def with_query(**changes: Any) -> str:
        return f"{base}{parts.path}?{urlencode({**query, **changes})}"

    other = await upload(c)
    refused = [
        m.sign_url(secret(dep), base, key, int(time.time()) - 1),  # expired, signed right
        with_query(signature="0" * 64),  # forged
        with_query(expires=int(query["expires"]) + 3600),  # extended
        with_query(key_id="m000000000000"),  # unknown key
        f"{base}{parts.path}",  # unsigned
        f"{base}/v1/media/{other['media']['key']}?{parts.query}",  # another blob
    ]
    for bad in refused:
        status, body, _ = await get(bad)
        assert status == 403, (bad, body)
        assert b"forbidden" in body
    assert (await get(url))[0] == 200
    missing = m.sign_url(secret(dep), base, m.new_key("x", "0" * 32), int(time.time()) + 60)
    assert (await get(missing))[0] == 404
    return parts


async def test_download_refusals(embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    c = await Client.open(dep.ws_url, dep.token(uid("d")))
    await check_download_refusals(dep, c, uploaded)
    await c.close()


Refuse = Callable[..., Awaitable[None]]


async def check_send_refusals(a: Client, b: Client,
                              upload: Callable[[Client], Awaitable[dict[str, Any]]],
                              more: Callable[[Refuse], Awaitable[None]] | None = None) -> None:
    """`send` with media b uploaded, never uploaded, altered or of the wrong kind is refused
    (then `more(refused)`: what one family checks on top); nothing reaches b, and the
    right media is sent and delivered."""
    conv = (await a.create([b.hello["user"]]))["conv"]
    bobs = (await upload(b))["media"]
    mine = (await upload(a))["media"]
    never = (await slot(a))["media"]

    async def refused(media: Any, code: str, needle: str, kind: str = "image") -> None:
        reply = await a.request({"t": "send", "conv": conv, "cid": uid("c"), "kind": kind,
                                 "body": "", "media": media})
        assert reply["t"] == "error" and reply["code"] == code, reply
        assert needle in reply["message"], reply

    await refused(bobs, "forbidden", "not one of your uploads")
    await refused(never, "bad_frame", "never uploaded")
    await refused({**mine, "size": 1}, "bad_frame", "does not match")
    await refused({**mine, "content_type": "image/gif"}, "bad_frame", "does not match")
    await refused(mine, "bad_frame", "cannot be sent as kind 'video'", kind="video")
    await refused({"key": "u/../../etc/passwd"}, "forbidden", "not one of your uploads")
    if more is not None:
        await more(refused)
    await still_open(a)
    await b.quiet()
    assert b.msgs(conv) == []
    ok = await a.request({"t": "send", "conv": conv, "cid": "ok", "kind": "image", "body": "",
                          "media": {"key": mine["key"]}})
    assert ok["t"] == "sent", ok
    msg = (await b.wait_msgs(conv, 1))[0]
    assert msg["media"]["size"] == len(PNG) and msg["media"]["content_type"] == "image/png"


async def test_send_media_refusals(embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    a = await Client.open(dep.ws_url, dep.token(uid("alice")))
    b = await Client.open(dep.ws_url, dep.token(uid("bob")))

    async def no_url_without_key(refused: Refuse) -> None:
        await refused({"url": "http://x"}, "bad_frame", "media.key")

    await check_send_refusals(a, b, uploaded, no_url_without_key)
    for c in (a, b):
        await c.close()


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment with its own media section: small ceilings, a custom allow-list."""
    port, media_port = free_port(), free_port()
    path = write_topology(tmp_path / "topology.yaml", port)
    raw = yaml.safe_load(path.read_text())
    raw["media"] = {"port": media_port, "max_bytes": {"image": 4096},
                    "content_types": {"file": ["application/x-msgctl-test"]}}
    path.write_text(yaml.safe_dump(raw))
    dep = Deployment(tmp_path / "home", path, port)
    dep.up()
    dep.media_port = media_port  # type: ignore[attr-defined]
    yield dep
    msgctl("down", "--home", str(dep.home), check=False)


async def test_topology_media_section(configured: Deployment) -> None:
    c = await Client.open(configured.ws_url, configured.token(uid("t")))
    big = await c.request({"t": "upload", "kind": "image", "content_type": "image/png",
                           "size": 4097})
    assert big["code"] == "too_large" and "4096" in big["message"]
    pdf = await c.request({"t": "upload", "kind": "file", "content_type": "application/pdf",
                           "size": 10})
    assert pdf["code"] == "bad_frame"
    reply = await uploaded(c, b"hello", kind="file", ctype="application/x-msgctl-test")
    assert reply["upload"]["url"] == f"https://127.0.0.1:{configured.media_port}/v1/blobs"  # type: ignore[attr-defined]
    status, data, ctype = await get(reply["media"]["url"])
    assert (status, data, ctype) == (200, b"hello", "application/x-msgctl-test")
    blobs = configured.home / "data" / "blobs"
    assert blobs.is_dir() and any(p.suffix == ".json" for p in blobs.rglob("*"))
    await c.close()


async def test_a_much_larger_file_is_refused_cleanly(embedded_deployment: Deployment) -> None:
    c = await Client.open(embedded_deployment.ws_url, embedded_deployment.token(uid("big")))
    await uploaded(c)
    reply = await slot(c, size=1000)
    status, body = await post(reply["upload"]["url"], reply["upload"]["fields"],
                              b"\0" * (5 * 1000 * 1000))
    assert status == 400 and body["error"] == "EntityTooLarge", body
    status, _, _ = await get(reply["media"]["url"])
    assert status == 404
    _, metrics = embedded_deployment.get("/metrics")
    assert 'msgctl_media_uploads_total{outcome="refused_400"}' in metrics
    assert 'msgctl_media_uploads_total{outcome="stored"}' in metrics
    await c.close()


async def test_msgctl_media_upload(embedded_deployment: Deployment, tmp_path: Path) -> None:
    dep = embedded_deployment
    alice, bob = uid("alice"), uid("bob")
    b = await Client.open(dep.ws_url, dep.token(bob))
    a = await Client.open(dep.ws_url, dep.token(alice))
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
    assert msg["kind"] == "image" and msg["body"] == "cat"
    assert (await get(msg["media"]["url"]))[1] == PNG
    refused = await asyncio.to_thread(
        msgctl, "media", "upload", str(photo), "--user", alice, "--content-type", "text/html",
        "--home", str(dep.home), check=False)
    assert refused.returncode == 1 and "upload refused: bad_frame" in refused.stderr
    await b.close()


async def test_any_user_id_gets_keys_and_urls_that_work(embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    for user in ["a.b@c.com", "x y/z", "ünï😀", "..", "%2E", "~7e"]:
        c = await Client.open(dep.ws_url, dep.token(user + uid("")))
        reply = await uploaded(c)
        assert "%" not in reply["media"]["url"].split("?")[0]
        assert (await get(reply["media"]["url"]))[:2] == (200, PNG), user
        await c.close()


async def test_recipients_urls_never_come_from_the_senders_host_header(
        embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    alice, bob = uid("alice"), uid("bob")
    # the sender reached the gateway under another name (its Host header says localhost;
    # it could say anything); its own upload slot may follow it, but the URL every
    # recipient gets is the region's own
    a = await Client.open(f"wss://localhost:{dep.port}/v1/ws", dep.token(alice))
    b = await Client.open(dep.ws_url, dep.token(bob))
    conv = (await a.create([bob]))["conv"]
    reply = await uploaded(a)
    assert reply["upload"]["url"].startswith("https://localhost:")
    sent = await a.request({"t": "send", "conv": conv, "cid": "h1", "kind": "image",
                            "body": "", "media": reply["media"]})
    assert sent["t"] == "sent", sent
    msg = (await b.wait_msgs(conv, 1))[0]
    assert msg["media"]["url"].startswith(f"https://127.0.0.1:{dep.port + 20}/v1/media/")
    status, data, _ = await get(msg["media"]["url"])
    assert (status, data) == (200, PNG)


async def test_many_parts_under_one_name_are_refused_before_the_file(
        embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    form = aiohttp.FormData()
    for _ in range(100):
        form.add_field("x", "y" * 100)
    form.add_field("file", PNG, filename="blob", content_type="image/png")
    async with aiohttp.ClientSession() as http, http.post(
            f"https://127.0.0.1:{dep.port + 20}/v1/blobs", data=form) as resp:
        assert resp.status == 400
        assert "too many form fields" in (await resp.json())["message"]


async def test_an_upload_slot_cannot_be_replayed_to_swap_the_file(
        embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    a = await Client.open(dep.ws_url, dep.token(uid("alice")))
    reply = await uploaded(a)
    other = bytes(reversed(PNG))
    status, body = await post(reply["upload"]["url"], reply["upload"]["fields"], other)
    assert status == 403 and "used already" in body["message"]
    status, data, _ = await get(reply["media"]["url"])
    assert (status, data) == (200, PNG)
