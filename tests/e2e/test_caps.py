"""Caps on what one user, address or connection may hold, on a deployment of its own with
small values: each refusal is a clear error and the connection (or the gateway) carries on."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Deployment, msgctl, start_deployment
from tests.wsclient import Client

pytestmark = pytest.mark.e2e

CAPS = {"max_connections_per_user": 3, "max_connections_per_address": 6,
        "max_conversations_per_user": 3, "max_upload_slots_per_user": 2,
        "rest_rate_per_second": 1, "rest_rate_burst": 3,
        "rate_bytes_per_second": 20_000, "rate_burst_bytes": 60_000,
        "handshake_timeout_s": 2}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = start_deployment(tmp_path_factory.mktemp("caps"), limits=CAPS)
    yield dep
    msgctl("down", "--home", str(dep.home), check=False)


async def refused_status(dep: Deployment, user: str, device: str) -> int:
    with pytest.raises(InvalidStatus) as exc:
        await connect(dep.ws_url, additional_headers={
            "Authorization": f"Bearer {dep.token(user, device)}"})
    return exc.value.response.status_code


async def test_connections_per_user_and_per_address(capped: Deployment) -> None:
    alice = uid("alice")
    held = [await Client.open(capped.ws_url, capped.token(alice, f"d{i}")) for i in range(3)]
    assert await refused_status(capped, alice, "d3") == 429
    # another user from the same address still gets in, up to the address cap (6)
    others = [await Client.open(capped.ws_url, capped.token(uid("u"), "d")) for _ in range(3)]
    assert await refused_status(capped, uid("late"), "d") == 429
    await others.pop().close()
    await held.pop().close()
    await asyncio.sleep(0.3)  # the gateway sees the closes
    again = await Client.open(capped.ws_url, capped.token(alice, "d3"))
    assert again.hello["user"] == alice
    for c in [*held, *others, again]:
        await c.close()


async def test_conversations_per_user(capped: Deployment) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    a = await Client.open(capped.ws_url, capped.token(alice))
    convs = [(await a.create([bob]))["conv"] for _ in range(3)]
    refused = await a.request({"t": "create", "members": [carol], "id": "c4"})
    assert (refused["t"], refused["code"]) == ("error", "limit_exceeded"), refused
    assert alice in refused["message"]
    # a member at the cap protects them from being added to more
    c = await Client.open(capped.ws_url, capped.token(carol))
    refused = await c.request({"t": "create", "members": [bob], "id": "c5"})
    assert (refused["t"], refused["code"]) == ("error", "limit_exceeded"), refused
    assert bob in refused["message"]
    # creating one that exists is not a new conversation: answered as before
    assert (await a.create([bob], conv=convs[0]))["conv"] == convs[0]
    for client in (a, c):
        await client.close()


async def test_upload_slots_per_user(capped: Deployment) -> None:
    c = await Client.open(capped.ws_url, capped.token(uid("up")))
    frame = {"t": "upload", "kind": "image", "content_type": "image/png", "size": 100}
    for i in range(2):
        assert (await c.request({**frame, "id": f"u{i}"}))["t"] == "upload_url"
    refused = await c.request({**frame, "id": "u2"})
    assert (refused["t"], refused["code"]) == ("error", "limit_exceeded"), refused
    assert (await c.request({"t": "ping", "id": "p"}))["t"] == "pong"  # the connection stays
    await c.close()


async def test_rate_limit_counts_bytes(capped: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    c = await Client.open(capped.ws_url, capped.token(alice))
    conv = (await c.create([bob]))["conv"]
    body = "x" * 16_000
    replies = [await c.request({"t": "send", "conv": conv, "cid": f"b{i}", "kind": "text",
                                "body": body, "id": f"s{i}"}) for i in range(5)]
    kinds = [r["t"] if r["t"] != "error" else r["code"] for r in replies]
    # a burst of 60 KB: three 16 KB frames go through, the fourth waits for the refill
    assert kinds[:3] == ["sent"] * 3 and "rate_limited" in kinds[3:], kinds
    limited = next(r for r in replies if r.get("code") == "rate_limited")
    assert limited["retry_ms"] >= 100
    await asyncio.sleep(limited["retry_ms"] / 1000 + 0.1)
    again = await c.request({"t": "send", "conv": conv, "cid": "b9", "kind": "text",
                             "body": body, "id": "s9"})
    assert again["t"] == "sent"
    await c.close()


async def test_rest_rate_limit(capped: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    c = await Client.open(capped.ws_url, capped.token(alice))
    conv = (await c.create([bob]))["conv"]
    await c.close()
    token = capped.token(alice)
    statuses = [capped.get(f"/v1/conversations/{conv}/messages", token) for _ in range(5)]
    assert [s for s, _ in statuses[:3]] == [200] * 3
    status, body = statuses[3]
    assert status == 429 and body["error"] == "rate_limited" and body["retry_ms"] > 0
    # another user has their own allowance
    assert capped.get(f"/v1/conversations/{conv}/messages", capped.token(bob))[0] == 200


async def dropped_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    t0 = time.monotonic()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        data = await asyncio.wait_for(reader.read(), 15)  # EOF when the server drops it
        assert b"101" not in data
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return time.monotonic() - t0


async def test_a_handshake_that_never_finishes_is_dropped(capped: Deployment) -> None:
    # silent after the TCP connect: the TLS handshake never starts
    reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
    waited = await dropped_after(reader, writer)
    assert 1 < waited < 6  # handshake_timeout_s: 2 (the default is 10)
    # TLS done, then only half an upgrade request
    reader, writer = await asyncio.open_connection("127.0.0.1", capped.port,
                                                   ssl=ssl.create_default_context())
    writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    await writer.drain()
    waited = await dropped_after(reader, writer)
    assert 1 < waited < 6
    # the gateway is fine
    c = await Client.open(capped.ws_url, capped.token(uid("after")))
    await c.close()


def test_limits_must_be_positive(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t\nbackend: embedded\nregions: [{name: local, host: 127.0.0.1, "
                    "gateway: {port: 18999}}]\nlimits: {rate_burst: 0}\n")
    proc = msgctl("up", "--home", str(tmp_path / "home"), "-t", str(topo), check=False)
    assert proc.returncode == 2, proc
    assert "limits.rate_burst: must be a positive number" in proc.stdout + proc.stderr
