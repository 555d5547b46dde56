"""The client side of protocol v1 (WebSocket subprotocol ``msgctl.v1``), for every client.

The wire format (docs/protocol.md, runtime/core/frames.py): every message is one
JSON object with a type ``t``. The gateway opens each session with a ``hello``
frame. A client frame may carry an ``id``; the reply to it (``sent``,
``created``, ``upload_url``, ``error``, ...) carries the same ``id``, while
server pushes (``msg``, ``receipt``, ``presence``, ...) carry none. The token
goes in an ``Authorization: Bearer`` header or in a ``?token=`` query.

Every client of the gateway in this repository goes through here: the test
client (tests/wsclient.py), the benchmark driver (msgctl/bench/driver.py),
``msgctl media``, the chaos drill devices and probes (chaos/traffic.py,
chaos/probes.py), all on asyncio and ``websockets``, and the Locust load user
(loadtest/user.py) on gevent and ``websocket-client`` (`open_sync`).

From thin to thick:

- `encode` is ``json.dumps`` itself, and `decode` is the gateway's own reader
  (`runtime.core.jsontext.loads`: orjson, in a fifth of ``json.loads``'s time,
  and ``json.loads`` for what orjson refuses, such as a lone surrogate a
  gateway's error message quotes), so hot loops (the benchmark traffic) pay
  next to nothing for going through this module;
- `connect` and `open_session` do the handshake (token, subprotocol) and the
  ``hello``; `read_hello` checks it;
- `call` and `recv_until` are request/reply on a bare connection with no reader;
- `Replies` matches replies to requests by id for clients with a reader of
  their own (futures resolved by the reader, failed when the connection drops);
- `Client` is a session with a reader task that files every frame, and
  helpers (request, create, send_text, ack, read, sync, wait for frames).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _ws_connect
from websockets.exceptions import ConnectionClosed

from runtime.core import jsontext

if TYPE_CHECKING:
    import websocket as websocket_client

SUBPROTOCOL = "msgctl.v1"
Frame = dict[str, Any]

# no wrapper of this module's own per frame (see the module's docstring)
encode: Callable[..., str] = json.dumps
decode: Callable[..., Any] = jsontext.loads
_COMPACT = (",", ":")

_ids = itertools.count(1)


def encode_compact(frame: Frame) -> str:
    """A frame with no spaces (what the load user sends)."""
    return json.dumps(frame, separators=_COMPACT)


def next_id(prefix: str = "r") -> str:
    """A request id unique in this process."""
    return f"{prefix}{next(_ids)}"


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_url(url: str, token: str) -> str:
    """`url` with the token as a query parameter (for clients that cannot set headers)."""
    return f"{url}?token={token}"


class NoHello(ConnectionError):
    """The gateway's first frame was not a ``hello`` (an ``error`` before a close 1013, ...)."""

    def __init__(self, frame: Any, raw: str | bytes | None = None) -> None:
        shown = str(raw if raw is not None else frame)[:80]
        super().__init__(f"expected hello, got {shown}")
        self.frame = frame


class UnexpectedReply(Exception):
    """A request answered with another frame type than the one expected."""

    def __init__(self, expected: str, reply: Frame) -> None:
        super().__init__(f"expected {expected}, got {reply}")
        self.expected = expected
        self.reply = reply


# -- asyncio: handshake --------------------------------------------------------------
_trust: ssl.SSLContext | None = None


def set_trust(ctx: ssl.SSLContext | None) -> None:
    """What `wss://` connections of this process trust unless a call passes `ssl=` (a
    deployment's CA, see `msgctl.tls.trust`); None: websockets' default (the system's
    roots, or `SSL_CERT_FILE`)."""
    global _trust
    _trust = ctx


async def connect(url: str, token: str, *, query_token: bool = False,
                  subprotocol: str | None = SUBPROTOCOL, **kwargs: Any) -> ClientConnection:
    """Open the WebSocket with `token` (a header, or the query with `query_token`), offering
    `subprotocol` (None: offer none, as the benchmark does). `kwargs` go to websockets."""
    if url.startswith("wss:") and _trust is not None:
        kwargs.setdefault("ssl", _trust)
    if subprotocol is not None:
        kwargs["subprotocols"] = [subprotocol]
    if query_token:
        return await _ws_connect(token_url(url, token), **kwargs)
    return await _ws_connect(url, additional_headers=auth_header(token), **kwargs)


def check_hello(raw: str | bytes) -> Frame:
    """The decoded ``hello`` frame, or `NoHello`."""
    frame = decode(raw)
    if not isinstance(frame, dict) or frame.get("t") != "hello":
        raise NoHello(frame, raw)
    return frame


async def read_hello(ws: ClientConnection, timeout: float | None = None) -> Frame:
    """Receive the session's first frame and check that it is the ``hello``."""
    return check_hello(await asyncio.wait_for(ws.recv(), timeout))


async def open_session(url: str, token: str, *, hello_timeout: float | None = 5.0,
                       query_token: bool = False, subprotocol: str | None = SUBPROTOCOL,
                       **kwargs: Any) -> tuple[ClientConnection, Frame]:
    """`connect`, then the ``hello``; a connection that answers anything else is closed and
    `NoHello` raised."""
    ws = await connect(url, token, query_token=query_token, subprotocol=subprotocol, **kwargs)
    try:
        hello = await read_hello(ws, hello_timeout)
    except NoHello:
        await ws.close()
        raise
    return ws, hello


# -- asyncio: request/reply on a bare connection ----------------------------------------
async def call(ws: ClientConnection, frame: Frame, timeout: float, *,
               per_frame: bool = False) -> Frame:
    """Send `frame` (it carries its ``id``) and read until the reply with that id; frames
    in between are dropped. `timeout` bounds the whole wait, or each receive with
    `per_frame`."""
    fid = frame["id"]
    await ws.send(encode(frame))
    deadline = time.monotonic() + timeout
    while True:
        wait = timeout if per_frame else max(0.1, deadline - time.monotonic())
        reply = decode(await asyncio.wait_for(ws.recv(), wait))
        if reply.get("id") == fid:
            return reply


async def recv_until(ws: ClientConnection, t: str) -> Frame:
    """Read (with no timeout) until a frame of type `t`; frames before it are dropped."""
    while True:
        frame = decode(await ws.recv())
        if frame.get("t") == t:
            return frame


class Replies:
    """Requests in flight on one connection, by id, for a client with its own reader: the
    reader hands every frame to `resolve`, and `fail_all` when the connection ends."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[Frame]] = {}

    def expect(self, fid: str) -> asyncio.Future[Frame]:
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.waiting[fid] = fut
        return fut

    def discard(self, fid: str) -> None:
        self.waiting.pop(fid, None)

    def resolve(self, frame: Frame) -> bool:
        """Complete the request `frame` answers; False if it answers none."""
        fid = frame.get("id")
        if fid is None or fid not in self.waiting:
            return False
        fut = self.waiting.pop(fid)
        if not fut.done():
            fut.set_result(frame)
        return True

    def fail_all(self, exc: BaseException) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()


# -- asyncio: a session with a reader ------------------------------------------------------
class Client:
    """One session: a reader task files every server frame in `frames`; callers wait for
    the frames they expect with a predicate and a timeout (each frame is taken once), and
    can look at everything that arrived."""

    def __init__(self, ws: ClientConnection, hello: Frame) -> None:
        self.ws = ws
        self.hello = hello
        self.frames: list[Frame] = []
        self._consumed: set[int] = set()
        self._changed = asyncio.Condition()
        self.closed: ConnectionClosed | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, token: str, *, query_token: bool = False,
                   hello_timeout: float = 5.0, **kwargs: Any) -> Self:
        """Connect, take the ``hello`` (`NoHello` otherwise) and start the reader."""
        ws, hello = await open_session(url, token, query_token=query_token,
                                       hello_timeout=hello_timeout, **kwargs)
        return cls(ws, hello)

    @classmethod
    async def open_when_ready(cls, url: str, token: str, seconds: float = 60) -> Self:
        """What a real client does while the service recovers: reconnect after an
        `unavailable` answer (close 1013) until a session opens."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            try:
                return await cls.open(url, token)
            except (AssertionError, NoHello, ConnectionClosed, OSError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = decode(raw)
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.ws.send(encode(frame))

    async def wait(self, pred: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame not yet taken that matches `pred`."""
        async def find() -> Frame:
            async with self._changed:
                while True:
                    for i, frame in enumerate(self.frames):
                        if i not in self._consumed and pred(frame):
                            self._consumed.add(i)
                            return frame
                    if self._reader.done():
                        raise ConnectionError(f"connection closed: {self.closed}")
                    await self._changed.wait()
        return await asyncio.wait_for(find(), timeout)

    async def wait_t(self, t: str, timeout: float = 5.0, **fields: Any) -> Frame:
        return await self.wait(
            lambda f: f.get("t") == t and all(f.get(k) == v for k, v in fields.items()), timeout)

    async def request(self, frame: Frame, timeout: float = 5.0) -> Frame:
        """Send a frame with a fresh id and return the reply carrying that id."""
        fid = next_id()
        await self.send({**frame, "id": fid})
        return await self.wait(lambda f: f.get("id") == fid, timeout)

    async def expect(self, frame: Frame, t: str, timeout: float = 5.0) -> Frame:
        """`request`, and the reply must be of type `t` (`UnexpectedReply` otherwise)."""
        reply = await self.request(frame, timeout)
        if reply.get("t") != t:
            raise UnexpectedReply(t, reply)
        return reply

    async def create(self, members: list[str], conv: str | None = None, **extra: Any) -> Frame:
        frame: Frame = {"t": "create", "members": members, **extra}
        if conv:
            frame["conv"] = conv
        return await self.expect(frame, "created")

    async def send_text(self, conv: str, cid: str, body: str = "hi",
                        timeout: float = 5.0) -> Frame:
        return await self.expect({"t": "send", "conv": conv, "cid": cid, "kind": "text",
                                  "body": body}, "sent", timeout)

    async def ack(self, conv: str, seq: int) -> None:
        """Acknowledge delivery up to `seq` (no reply)."""
        await self.send({"t": "ack", "conv": conv, "seq": seq})

    async def read(self, conv: str, seq: int) -> None:
        """Mark `conv` read up to `seq` (no reply)."""
        await self.send({"t": "read", "conv": conv, "seq": seq})

    async def sync(self, conv: str | None = None, after: int = 0,
                   limit: int | None = None, timeout: float = 5.0) -> Frame:
        """Ask for what this device has not acked (of `conv`, after `after`); the reply
        (``batch`` for one conversation, ``synced`` for all)."""
        frame: Frame = {"t": "sync", "after": after}
        if conv is not None:
            frame["conv"] = conv
        if limit is not None:
            frame["limit"] = limit
        return await self.request(frame, timeout)

    def msgs(self, conv: str) -> list[Frame]:
        return [f for f in self.frames if f.get("t") == "msg" and f.get("conv") == conv]

    async def wait_msgs(self, conv: str, count: int, timeout: float = 10.0) -> list[Frame]:
        """Wait until at least `count` msg frames of `conv` arrived; returns them all."""
        async def enough() -> None:
            async with self._changed:
                while len(self.msgs(conv)) < count:
                    if self._reader.done():
                        raise ConnectionError(f"connection closed: {self.closed}")
                    await self._changed.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.msgs(conv)

    async def quiet(self, seconds: float = 0.3) -> None:
        """Let in-flight frames arrive (for asserting that something did NOT come)."""
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)  # the reader stops

    async def wait_closed(self, timeout: float = 10.0) -> ConnectionClosed | None:
        await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), timeout)
        return self.closed


# -- gevent / websocket-client (the Locust load user) --------------------------------------
def open_sync(url: str, token: str, *, timeout: float = 10.0,
              **kwargs: Any) -> tuple[websocket_client.WebSocket, str | bytes, Frame]:
    """Blocking `open_session` with websocket-client: the socket, the raw ``hello`` and the
    decoded one. A socket whose first frame is no ``hello`` is shut and `NoHello` raised;
    other errors leave it to the caller (none is returned)."""
    import websocket

    ws = websocket.create_connection(url, timeout=timeout, header=[
        f"Authorization: Bearer {token}"], subprotocols=[SUBPROTOCOL], **kwargs)
    try:
        raw = ws.recv()
        hello = check_hello(raw)
    except BaseException:
        ws.shutdown()
        raise
    return ws, raw, hello
