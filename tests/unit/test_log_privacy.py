"""Logs carry no message bodies, JWTs or push tokens.

Three layers: the records that hold a body or a token leave it out of their
repr (what a ``%r`` in a log call prints; the gateway logs a failed action so);
`runtime.redact` scrubs the text libraries produce; and every handler a node
sets up carries that filter, which a real websockets server logging its
request lines at DEBUG (``GET /v1/ws?token=<JWT>``) proves on the log file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from runtime import auth, ports
from runtime.adapters.push.apns import ApnsProvider
from runtime.adapters.push.errors import PushError
from runtime.config import NodeConfig
from runtime.core import frames as f
from runtime.core import session as sm
from runtime.core.ratelimit import TokenBucket
from runtime.gateway.actions import Performer
from runtime.gateway.session import Session
from runtime.node import LOGGERS, setup_logging
from runtime.redact import REDACTED, RedactFilter, redact
from tests.standins.keys import ec_pems
from tests.unit.test_session_shell import FakeWs

BODY = "meet me at the old mill at nine"
PUSH = "fcm-device-token-0123456789abcdef"
JWT = auth.issue("k" * 32, "alice", "phone")
SIGNATURE = JWT.rsplit(".", 1)[1]


@pytest.mark.parametrize("text", [
    f"< GET /v1/ws?token={JWT} HTTP/1.1",
    f"< GET /v1/conversations/c/messages?after=0&token={JWT}&limit=5 HTTP/1.1",
    f"< Authorization: Bearer {JWT}",
    f"authorization: Basic {SIGNATURE}",
    f"calling with bearer {SIGNATURE}",
    f"a JWT alone: {JWT}.",
    f"frame {{'t': 'push_register', 'token': '{PUSH}', 'id': 'p1'}}",
    f'{{"t": "send", "conv": "c", "body": "{BODY}"}}',
    f"Send(conv='c', body='{BODY} \\'quoted\\'', id=None)",
    f"GET /v1/media/k?expires=1&key_id=a&signature={SIGNATURE}",
])
def test_redact_takes_out_every_secret(text: str) -> None:
    clean = redact(text)
    for secret in (JWT, SIGNATURE, PUSH, BODY):
        assert secret not in clean
    assert REDACTED in clean


def test_redact_keeps_ordinary_lines() -> None:
    for line in ("push to bob/phone: token invalid (UNREGISTERED); removed",
                 "closing session s1 of alice/phone: token expired",
                 "missing bearer token", "listening on ws://127.0.0.1:7400/v1/ws"):
        assert redact(line) == line


def test_records_holding_a_body_or_token_leave_it_out_of_their_repr() -> None:
    records = [
        ports.Message("c", 1, 0, "m", "x", "alice", "phone", 1, "text", BODY),
        ports.Send("c", "x", "alice", "phone", "text", BODY, None, 1),
        ports.PushToken("alice", "phone", "fcm", PUSH),
        f.Send("c", "x", "text", BODY), f.PushRegister("fcm", PUSH),
        sm.Submit("c", "x", "alice", "phone", "text", BODY, None, "1"),
        sm.RegisterPush("fcm", PUSH, "1"), sm.Authorize(f.Send("c", "x", "text", BODY)),
        sm.AttachMedia(f.Send("c", "x", "image", BODY)),
    ]
    for record in records:
        assert BODY not in repr(record) and PUSH not in repr(record), repr(record)
    # the fields are still there, and still compared
    assert records[0] != ports.Message("c", 1, 0, "m", "x", "alice", "phone", 1, "text", "")


class Failing:
    """Services that fail: the store is away (Unavailable) or broken (a bug)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def set_push_token(self, token: ports.PushToken) -> None:
        raise self.exc

    async def get(self, conv: str) -> ports.Conversation | None:
        raise self.exc

    def heartbeat(self, user: str, session: str) -> None:
        return None


@pytest.mark.parametrize("exc", [ports.Unavailable("store away"), RuntimeError("bug")])
async def test_a_failed_action_is_logged_without_its_body_or_push_token(
        exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    machine = sm.SessionMachine("alice", "phone", "s1", region="eu", heartbeat_ms=1000,
                                limits=f.Limits(), bucket=TokenBucket(100, 100))
    machine.opened({})
    session = Session(FakeWs(), machine, 1 << 20, None)  # type: ignore[arg-type]
    svc = Failing(exc)
    config = SimpleNamespace(host="127.0.0.1", limits=SimpleNamespace(inflight_sends=4))
    performer = Performer(config, store=svc, state=svc, conversations=svc,  # type: ignore[arg-type]
                          ingest=svc, receipts=svc, events=svc, presence=svc, media=None)
    caplog.set_level(logging.INFO, "msgctl.gateway")
    for frame in ({"t": "push_register", "id": "p", "platform": "fcm", "token": PUSH},
                  {"t": "send", "id": "s", "conv": "c1", "cid": "x", "kind": "text",
                   "body": BODY}):
        assert not await performer.run(session, machine.receive_frame(json.dumps(frame), 0.0))
    await asyncio.sleep(0.01)
    logged = caplog.text
    assert "RegisterPush" in logged and "Authorize" in logged  # both failures were logged
    assert PUSH not in logged and BODY not in logged


async def test_an_apns_network_error_does_not_quote_the_device_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    provider = ApnsProvider(ec_pems()[0], key_id="K", team_id="T", topic="app",
                            host="https://apns.invalid")
    await provider.aclose()
    provider._client = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    with pytest.raises(PushError) as err:
        await provider.send(ports.PushToken("bob", "phone", "apns", PUSH), {"conv": "c"})
    await provider._client.aclose()
    assert err.value.retryable and "ConnectError" in err.value.reason
    assert PUSH not in err.value.reason and err.value.__cause__ is None


@pytest.fixture
def node_logging() -> Iterator[None]:
    """The node's logging set up in this process, and undone after the test."""
    names = ["", *(n for group in LOGGERS.values() for n in group)]
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in names}
    try:
        yield
    finally:
        for n, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(n)
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


async def test_websockets_request_lines_and_tracebacks_are_redacted_in_node_logs(
        tmp_path: Path, node_logging: None) -> None:
    config = NodeConfig(region="local", host="127.0.0.1", port=0, data_dir=str(tmp_path),
                        log_dir=str(tmp_path), secret="s", runtimes=["gateway"])
    setup_logging(config)
    # an operator debugging the handshake: websockets logs each request line and header
    logging.getLogger("websockets").setLevel(logging.DEBUG)
    # the file handlers, and the stderr one (the program's log) added last to the root
    ours = [*logging.getLogger("websockets").handlers, logging.getLogger().handlers[-1]]
    assert all(any(isinstance(flt, RedactFilter) for flt in h.filters) for h in ours)

    async def handler(ws: ServerConnection) -> None:
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/v1/ws?token={JWT}",
                           additional_headers={"Authorization": f"Bearer {JWT}"}) as ws:
            await ws.wait_closed()
    try:
        raise ValueError(f"GET https://push.example/send?token={JWT} failed, body={BODY!r}")
    except ValueError:
        logging.getLogger("msgctl.gateway").exception("request failed: token=%s", PUSH)
    for h in logging.getLogger("websockets").handlers:
        h.flush()
    text = (tmp_path / "gateway.local.log").read_text()
    assert "/v1/ws?token=[redacted]" in text  # the request line was logged, redacted
    assert '"exc": "Traceback' in text
    for secret in (JWT, SIGNATURE, PUSH):
        assert secret not in text
    assert BODY not in text
