"""The gateway's side of a session, with stand-ins for the socket and the services.

`Performer.run` carries out a machine's actions; these check the rules of the
shell itself: a request that fails ends its list with one error reply (no `ok`
after a push token that was not stored), sends are submitted with the sender's
identity, and a `Close` after an error frame still lets the error out first.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from runtime.core import errors
from runtime.core import frames as f
from runtime.core import session as sm
from runtime.core.ratelimit import TokenBucket
from runtime.gateway.actions import Performer
from runtime.gateway.session import Session
from runtime.ports import Conversation, Message, PushToken, Send, Unavailable


class FakeWs:
    """Records what the gateway writes; never a socket."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.request = None

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def send_text_now(self, text: str) -> bool:
        self.sent.append(json.loads(text))
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Services:
    def __init__(self) -> None:
        self.tokens: list[PushToken] = []
        self.submitted: list[Send] = []
        self.fail_push: Exception | None = None
        self.heartbeats = 0

    async def set_push_token(self, token: PushToken) -> None:
        if self.fail_push is not None:
            raise self.fail_push
        self.tokens.append(token)

    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        if self.fail_push is not None:
            raise self.fail_push
        self.tokens = [t for t in self.tokens if (t.user, t.device) != (user, device)
                       or (token is not None and t.token != token)]

    async def get(self, conv: str) -> Conversation | None:
        return Conversation(conv, ("alice", "bob"), "eu") if conv == "c1" else None

    def submit(self, send: Send) -> asyncio.Future[Message]:
        self.submitted.append(send)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        fut.set_result(Message(send.conv, 1, 0, "m1", send.cid, send.sender, send.device,
                               send.ts, send.kind, send.body))
        return fut

    def heartbeat(self, user: str, session: str) -> None:
        self.heartbeats += 1


def shell(queue_bytes: int = 1 << 20) -> tuple[Session, Performer, FakeWs, Services]:
    ws, svc = FakeWs(), Services()
    machine = sm.SessionMachine("alice", "phone", "s1", region="eu", heartbeat_ms=1000,
                                limits=f.Limits(), bucket=TokenBucket(100, 100))
    machine.opened({})
    session = Session(ws, machine, queue_bytes, None)  # type: ignore[arg-type]
    config = SimpleNamespace(host="127.0.0.1", limits=SimpleNamespace(inflight_sends=4))
    performer = Performer(config, store=svc, state=svc, conversations=svc,  # type: ignore[arg-type]
                          ingest=svc, receipts=svc, events=svc, presence=svc, media=None)
    return session, performer, ws, svc


async def feed(session: Session, performer: Performer, frame: dict[str, Any]) -> bool:
    ok = await performer.run(session, session.machine.receive_frame(json.dumps(frame), 0.0))
    await asyncio.sleep(0.01)  # let the writer task send what was queued
    return ok


async def test_push_register_says_ok_only_once_the_token_is_stored():
    session, performer, ws, svc = shell()
    frame = {"t": "push_register", "id": "p", "platform": "fcm", "token": "abc"}
    assert await feed(session, performer, frame)
    assert svc.tokens == [PushToken("alice", "phone", "fcm", "abc")]
    assert ws.sent == [{"t": "ok", "id": "p"}]
    svc.fail_push = Unavailable("redis away")
    assert not await feed(session, performer, frame)
    assert ws.sent[1:] == [{"t": "error", "code": errors.UNAVAILABLE,
                            "message": "temporarily unavailable; retry", "id": "p"}]
    svc.fail_push = RuntimeError("bug")
    assert not await feed(session, performer, frame)
    assert ws.sent[2]["code"] == errors.INTERNAL and not session.closing
    assert svc.heartbeats == 3


async def test_push_unregister_removes_this_devices_token_and_is_idempotent():
    session, performer, ws, svc = shell()
    svc.tokens = [PushToken("alice", "phone", "fcm", "abc"),
                  PushToken("alice", "tablet", "apns", "def"),
                  PushToken("bob", "phone", "fcm", "ghi")]
    assert await feed(session, performer, {"t": "push_unregister", "id": "u"})
    # only this session's device: alice's tablet and bob keep theirs
    assert svc.tokens == [PushToken("alice", "tablet", "apns", "def"),
                          PushToken("bob", "phone", "fcm", "ghi")]
    assert await feed(session, performer, {"t": "push_unregister", "id": "v"})  # again: ok
    assert ws.sent == [{"t": "ok", "id": "u"}, {"t": "ok", "id": "v"}]
    svc.fail_push = Unavailable("cassandra away")
    assert not await feed(session, performer, {"t": "push_unregister", "id": "w"})
    assert ws.sent[2] == {"t": "error", "code": errors.UNAVAILABLE,
                          "message": "temporarily unavailable; retry", "id": "w"}


async def test_a_send_is_submitted_as_the_sender_and_answered_sent():
    session, performer, ws, svc = shell()
    await feed(session, performer, {"t": "send", "id": "s", "conv": "c1", "cid": "x",
                                    "kind": "text", "body": "hi"})
    [send] = svc.submitted
    assert (send.sender, send.device, send.conv, send.cid, send.body) == (
        "alice", "phone", "c1", "x", "hi")
    assert send.ts > 1_600_000_000_000  # stamped by the shell, in ms
    assert ws.sent == [{"t": "sent", "conv": "c1", "cid": "x", "seq": 1, "prev": 0,
                        "ts": send.ts, "id": "s"}]
    await feed(session, performer, {"t": "send", "id": "t", "conv": "c9", "cid": "y",
                                    "kind": "text", "body": "hi"})
    assert len(svc.submitted) == 1 and ws.sent[1]["code"] == errors.NOT_FOUND


async def test_expiry_sends_its_error_before_the_flushing_close():
    session, _, ws, _ = shell()
    session.expire()
    await asyncio.sleep(0.01)
    assert session.closing and ws.sent[0]["code"] == errors.UNAUTHORIZED
    assert ws.closed == (errors.CLOSE_POLICY, "token expired")
    assert session.machine.receive_frame('{"t":"ping"}', 0.0) == []


async def test_a_slow_consumer_is_closed_and_the_machine_stops_taking_frames():
    session, _, ws, _ = shell(queue_bytes=10)  # smaller than any frame
    assert not session.apply(sm.Reply({"t": "typing", "conv": "c1", "user": "bob"}))
    await asyncio.sleep(0.01)
    assert ws.closed is not None and ws.closed[0] == errors.CLOSE_TRY_AGAIN
    assert session.machine.closing and session.machine.deliver_message(
        Message("c1", 1, 0, "m", "c", "bob", "d", 0, "text", "")) == []
