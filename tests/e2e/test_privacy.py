"""The deployment home is private, and its logs carry no secrets, end to end.

A real embedded deployment from `msgctl up`, started under a permissive umask
(022, the common default) so that nothing passes by luck: every directory of
its home must be 0700 and every file (the store, logs, blobs, configs, state,
secret, the control socket) closed to group and others, while it runs and
after `down`. Then traffic with distinctive values (message bodies, JWTs in a
header and in the ``?token=`` query, a push token) must leave no trace in any
file under ``logs/``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Deployment, msgctl, start_deployment
from tests.wsclient import Client

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask `msgctl up` (a child of this process) inherits."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose(root: Path) -> list[str]:
    """Everything under `root` (itself included) that group or others may access."""
    out = _check(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            out += _check(Path(folder) / name)
    return out


def _check(path: Path) -> list[str]:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):  # a link's own bits are always 0777 and mean nothing
        return []
    return [f"{oct(stat.S_IMODE(mode))} {path}"] if stat.S_IMODE(mode) & 0o077 else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def private_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with umask(0o022):
        dep = start_deployment(tmp_path_factory.mktemp("privacy"))
    yield dep
    msgctl("down", "--home", str(dep.home), check=False)


async def traffic(dep: Deployment, body: str, push_token: str) -> list[str]:
    """Bodies, JWTs and a push token through every way in; the JWTs used."""
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    a_jwt, b_jwt, q_jwt = dep.token(alice), dep.token(bob), dep.token(alice, "web")
    a = await Client.open(dep.ws_url, a_jwt)
    b = await Client.open(dep.ws_url, b_jwt)
    web = await Client.open(dep.ws_url, q_jwt, query_token=True)  # the token in the URL
    assert (await b.request({"t": "push_register", "platform": "fcm",
                             "token": push_token}))["t"] == "ok"
    conv = (await a.create([bob]))["conv"]
    await a.send_text(conv, "c1", body)
    await b.wait_msgs(conv, 1)
    await b.close()  # offline: the next message is pushed to the token
    await a.send_text(conv, "c2", body + "-offline")
    # refused frames carrying the body: a stranger's conversation, a malformed frame
    reply = await a.request({"t": "send", "conv": "no-such-conv", "cid": "c3", "kind": "text",
                             "body": body})
    assert reply["t"] == "error"
    await a.ws.send('{"t":"send","conv":"' + conv + '","body":"' + body)
    await a.request({"t": "ping"})
    # an expired JWT in the query, a bad bearer header, a REST read with the token
    expired = dep.token(alice, "old", ttl=-10)
    with pytest.raises(InvalidStatus):
        await connect(f"{dep.ws_url}?token={expired}")
    with pytest.raises(InvalidStatus):
        await connect(dep.ws_url, additional_headers={"Authorization": f"Bearer {expired}x"})
    status, page = dep.get(f"/v1/conversations/{conv}/messages?token={a_jwt}")
    assert status == 200 and page["msgs"][0]["body"] == body
    assert dep.get(f"/nowhere?token={a_jwt}")[0] == 404
    for c in (a, web):
        await c.close()
    return [a_jwt, b_jwt, q_jwt, expired]


async def test_logs_carry_no_bodies_jwts_or_push_tokens(private_deployment: Deployment) -> None:
    dep = private_deployment
    body = f"privacy-body-{uuid.uuid4().hex}"
    push_token = f"privacy-push-{uuid.uuid4().hex}"
    jwts = await traffic(dep, body, push_token)
    msgctl("restart", "--yes", "--home", str(dep.home))  # stop and start lines, flushed logs
    secrets = {"body": body, "push token": push_token}
    for i, jwt in enumerate(jwts):
        secrets[f"jwt {i}"] = jwt
        secrets[f"jwt {i} signature"] = jwt.rsplit(".", 1)[1]
    logs = [p for p in (dep.home / "logs").rglob("*") if p.is_file()]
    assert logs, "no log files"
    found = [f"{what} in {p.name}" for p in logs for what, value in secrets.items()
             if value.encode() in p.read_bytes()]
    assert found == []


async def test_home_is_private(private_deployment: Deployment, tmp_path: Path) -> None:
    dep = private_deployment
    await traffic(dep, f"privacy-body-{uuid.uuid4().hex}", f"privacy-push-{uuid.uuid4().hex}")
    blob = tmp_path / "photo.png"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    msgctl("media", "upload", str(blob), "--user", "carol", "--home", str(dep.home), "--json")
    home = dep.home
    for f in ("secret", "deployment.json", "run/state.json", "run/plan.json",
              "run/supervisor.pid", "config/node.local.json", "logs/supervisor.log",
              "logs/node.local.log", "logs/gateway.local.log", "data/local.db"):
        assert mode(home / f) == 0o600, f
    assert mode(home / "run" / "supervisor.sock") == 0o600
    assert stat.S_ISSOCK((home / "run" / "supervisor.sock").lstat().st_mode)
    assert mode(home) == 0o700
    blobs = [p for p in (home / "data" / "blobs").rglob("*") if p.is_file()]
    assert blobs, "the upload left no blob"
    assert loose(home) == []
    msgctl("down", "--home", str(home))
    assert loose(home) == []
    with umask(0o022):
        dep.up()  # and up again over the same home: still private
    assert loose(home) == []
