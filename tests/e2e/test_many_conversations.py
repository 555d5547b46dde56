"""A user in thousands of conversations (embedded): exact resume, and nobody else waits.

The new device's baseline, the resume and a sync of everything read the heads of
all the user's conversations in batches, off the event loop; this checks what the
device gets (exactly what it has not acked: nothing from before its first hello,
nothing twice) and that another user's pings keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from msgctl.wire import next_id
from tests.conftest import Deployment
from tests.wsclient import Client

pytestmark = pytest.mark.e2e

CONVERSATIONS = 2000
CREATORS = 20  # connections creating them side by side (each takes its frames in order)
# a gateway whose loop is never held answers in a few ms; the bound leaves room for a
# loaded machine and still fails a resume or sync that holds the loop for its whole run
PING_BOUND_S = 0.25


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def pipelined(c: Client, frames: list[dict], expect: str, timeout: float = 120) -> list:
    """Send every frame at once, then take each reply (in any order)."""
    ids = []
    for frame in frames:
        fid = next_id()
        ids.append(fid)
        await c.send({**frame, "id": fid})
    replies = [await c.wait(lambda f, fid=fid: f.get("id") == fid, timeout) for fid in ids]
    assert all(r["t"] == expect for r in replies), [r for r in replies if r["t"] != expect][:3]
    return replies


class Pinger:
    """Another user pinging back to back (one in flight); the worst round trip."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.worst = 0.0
        self.count = 0
        self.stopping = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self.stopping:
            t0 = time.perf_counter()
            pong = await self.client.request({"t": "ping"}, timeout=30)
            assert pong["t"] == "pong"
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.count += 1
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        # not task.cancel(): on Python 3.11 a wait_for whose reply lands as the task is
        # cancelled swallows the cancellation, and the loop would ping on for good
        self.stopping = True
        await self.task  # a ping that failed fails the test


async def test_resume_of_a_user_in_thousands_of_conversations(
        embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    big = uid("big")
    creators = [await Client.open(dep.next_ws_url(), dep.token(uid("peer")))
                for _ in range(CREATORS)]
    convs = [f"{big}-{i:04d}" for i in range(CONVERSATIONS)]
    owner = {conv: creators[i % CREATORS] for i, conv in enumerate(convs)}
    await asyncio.gather(*(pipelined(c, [{"t": "create", "members": [big], "conv": conv}
                                         for conv in convs[i::CREATORS]], "created")
                           for i, c in enumerate(creators)))
    head = dict.fromkeys(convs, 0)

    async def send(targets: list[str], tag: str) -> None:
        by_owner: dict[Client, list[str]] = {}
        for conv in targets:
            by_owner.setdefault(owner[conv], []).append(conv)
        for c, mine in by_owner.items():
            for sent in await pipelined(c, [
                    {"t": "send", "conv": conv, "cid": f"{tag}-{conv}", "kind": "text",
                     "body": tag} for conv in mine], "sent"):
                assert sent["seq"] == head[sent["conv"]] + 1
                head[sent["conv"]] = sent["seq"]

    # before the device's first hello: its baseline, never delivered to it
    await send(convs[::100], "before")
    cursor = dict(head)
    phone = await Client.open(dep.next_ws_url(), dep.token(big, "phone"), hello_timeout=30)
    live = convs[5::50]
    await send(live, "live")
    deadline = time.monotonic() + 20
    while sum(1 for f in phone.frames if f.get("t") == "msg") < len(live):
        assert time.monotonic() < deadline, "live messages not delivered"
        await asyncio.sleep(0.05)
    await phone.quiet(0.3)
    assert sorted((f["conv"], f["seq"]) for f in phone.frames if f.get("t") == "msg") == sorted(
        (conv, head[conv]) for conv in live)
    for conv in live[::2]:  # half of them acked
        await phone.ack(conv, head[conv])
        cursor[conv] = head[conv]
    await phone.request({"t": "ping"})  # the gateway took the acks (frames go in order)
    await phone.close()

    # while the device is away
    await send(convs[7::40] + live[::4], "away")
    unacked = sorted((conv, seq) for conv in convs
                     for seq in range(cursor[conv] + 1, head[conv] + 1))
    assert len(unacked) == 80  # 20 live ones unacked, 50 new, 10 new in live ones

    other = await Client.open(dep.next_ws_url(), dep.token(uid("other")))
    pinger = Pinger(other)
    await asyncio.sleep(0.2)
    phone = await Client.open(dep.next_ws_url(), dep.token(big, "phone"), hello_timeout=30)
    deadline = time.monotonic() + 30
    while sum(1 for f in phone.frames if f.get("t") == "msg") < len(unacked):
        assert time.monotonic() < deadline, "resume incomplete"
        await asyncio.sleep(0.02)
    await phone.quiet(0.5)
    resumed = [(f["conv"], f["seq"]) for f in phone.frames if f.get("t") == "msg"]
    assert sorted(resumed) == unacked  # exactly the unacked: none missing, none twice

    # a sync of everything: one batch per conversation with something unacked
    sid = next_id()
    await phone.send({"t": "sync", "after": 0, "id": sid})
    await phone.wait(lambda f: f.get("id") == sid and f.get("t") == "synced", timeout=30)
    batches = [f for f in phone.frames if f.get("id") == sid and f.get("t") == "batch"]
    assert sorted((m["conv"], m["seq"]) for b in batches for m in b["msgs"]) == unacked
    assert len(batches) == len({conv for conv, _ in unacked})

    await pinger.stop()
    assert pinger.count > 0
    assert pinger.worst < PING_BOUND_S, f"another user's ping took {pinger.worst:.3f}s"
    for c in [phone, other, *creators]:
        await c.close()
