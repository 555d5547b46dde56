"""Bodies and media metadata at rest: sealed at the gateway, so no file the deployment
writes (SQLite and its WAL, Kafka's log segments, Cassandra's commit log, logs) holds them
in the clear; devices still get them; a key rotation applies without a restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Deployment, msgctl
from tests.wsclient import Client

pytestmark = pytest.mark.e2e


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def files_holding(root: Path, needle: bytes) -> list[str]:
    out = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and needle in p.read_bytes():
                out.append(str(p.relative_to(root)))
        except OSError:
            continue  # a file rolled away while we looked
    return out


async def test_bodies_are_sealed_at_rest_and_open_for_devices(deployment: Deployment) -> None:
    dep = deployment
    alice, bob = uid("alice"), uid("bob")
    marker = f"attack at dawn {uuid.uuid4().hex}"
    a = await Client.open(dep.next_ws_url(), dep.token(alice))
    b = await Client.open(dep.next_ws_url(), dep.token(bob))
    conv = (await a.create([bob]))["conv"]
    first = await a.send_text(conv, "m1", marker)
    got = await b.wait_msgs(conv, 1, timeout=30)
    assert got[0]["body"] == marker
    # every copy the deployment keeps is sealed; the device and REST read the text
    page = await b.sync(conv)
    assert page["msgs"][0]["body"] == marker
    status, rest = dep.get(f"/v1/conversations/{conv}/messages", dep.token(bob))
    assert status == 200 and rest["msgs"][0]["body"] == marker
    # rotate: new sends are sealed under the new key without a restart; old ones still open
    keys = json.loads(msgctl("keys", "rotate", "--json", "--home", str(dep.home)).stdout)
    current = next(k["id"] for k in keys["keys"] if k["current"])
    assert len(keys["keys"]) >= 2
    await asyncio.sleep(1.5)  # the gateways look at the keyring at most once a second
    second = await a.send_text(conv, "m2", marker + " again")
    assert second["seq"] == first["seq"] + 1
    await b.wait_msgs(conv, 2, timeout=30)
    page = await b.sync(conv)
    assert [m["body"] for m in page["msgs"]] == [marker, marker + " again"]
    await a.close()
    await b.close()
    time.sleep(1.0)  # the router's write of the last message (cluster)
    leaks = files_holding(dep.home, marker.encode())
    assert leaks == [], f"the body in the clear in {leaks}"
    listed = json.loads(msgctl("keys", "list", "--json", "--home", str(dep.home)).stdout)
    assert next(k["id"] for k in listed["keys"] if k["current"]) == current
    ring = dep.home / "keys" / "keyring.json"
    assert oct(ring.stat().st_mode & 0o777) == "0o600"
    if dep.family == "embedded":  # the second message names the new key in the store
        stored = b"".join(p.read_bytes() for p in dep.home.rglob("*.db*") if p.is_file())
        assert f"\x00s1.{current}.".encode() in stored


async def test_media_blobs_are_sealed_at_rest_and_download_as_sent(
        deployment: Deployment) -> None:
    """An image larger than one sealing segment: the stored object (a file, or S3Proxy's)
    never holds its bytes; the recipient's download is exactly what was sent."""
    dep = deployment
    alice, bob = uid("alice"), uid("bob")
    marker = f"pixels-{uuid.uuid4().hex}".encode()
    data = b"\x89PNG\r\n\x1a\n" + (marker * 4000)[:150_000] + marker
    a = await Client.open(dep.next_ws_url(), dep.token(alice))
    b = await Client.open(dep.next_ws_url(), dep.token(bob))
    conv = (await a.create([bob]))["conv"]
    reply = await a.request({"t": "upload", "kind": "image", "content_type": "image/png",
                             "size": len(data)})
    assert reply["t"] == "upload_url", reply
    form = aiohttp.FormData()
    for k, v in reply["upload"]["fields"].items():
        form.add_field(k, v)
    form.add_field("file", data, filename="cat.png", content_type="image/png")
    async with aiohttp.ClientSession() as http:
        async with http.post(reply["upload"]["url"], data=form) as resp:
            assert resp.status == 204, await resp.text()
        sent = await a.request({"t": "send", "conv": conv, "cid": "img", "kind": "image",
                                "body": "", "media": reply["media"]})
        assert sent["t"] == "sent", sent
        (msg,) = await b.wait_msgs(conv, 1, timeout=30)
        assert msg["media"]["size"] == len(data)
        async with http.get(msg["media"]["url"]) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(data))
            assert await resp.read() == data
    await a.close()
    await b.close()
    leaks = files_holding(dep.home, marker)
    assert leaks == [], f"the blob in the clear in {leaks}"
