"""A small protocol v1 test client over a real WebSocket connection.

A reader task files every server frame; tests wait for the frames they expect
with a predicate and a timeout, and can assert on everything that arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]
_ids = itertools.count(1)


class Client:
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
                   hello_timeout: float = 5.0, **kwargs: Any) -> Client:
        if query_token:
            ws = await connect(f"{url}?token={token}", subprotocols=["msgctl.v1"], **kwargs)
        else:
            ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                               subprotocols=["msgctl.v1"], **kwargs)
        hello = json.loads(await asyncio.wait_for(ws.recv(), hello_timeout))
        assert hello["t"] == "hello", hello
        return cls(ws, hello)

    @classmethod
    async def open_when_ready(cls, url: str, token: str, seconds: float = 60) -> Client:
        """What a real client does while the service recovers: reconnect after an
        `unavailable` answer (close 1013) until a session opens."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            try:
                return await cls.open(url, token)
            except (AssertionError, ConnectionClosed, OSError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

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
        fid = f"r{next(_ids)}"
        await self.send({**frame, "id": fid})
        return await self.wait(lambda f: f.get("id") == fid, timeout)

    async def create(self, members: list[str], conv: str | None = None, **extra: Any) -> Frame:
        frame: Frame = {"t": "create", "members": members, **extra}
        if conv:
            frame["conv"] = conv
        reply = await self.request(frame)
        assert reply["t"] == "created", reply
        return reply

    async def send_text(self, conv: str, cid: str, body: str = "hi",
                        timeout: float = 5.0) -> Frame:
        reply = await self.request({"t": "send", "conv": conv, "cid": cid, "kind": "text",
                                    "body": body}, timeout)
        assert reply["t"] == "sent", reply
        return reply

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
        await asyncio.gather(self._reader, return_exceptions=True)
        # wait for the reader to stop

    async def wait_closed(self, timeout: float = 10.0) -> ConnectionClosed | None:
        await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), timeout)
        return self.closed


def assert_chain(frames: list[Frame], start_prev: int = 0) -> None:
    """In seq order, every prev the seq before it: no gap, no duplicate."""
    prev = start_prev
    for f in frames:
        assert f["prev"] == prev, (f, prev)
        assert f["seq"] > prev
        prev = f["seq"]
