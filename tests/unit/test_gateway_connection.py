"""The gateway's WebSocket connection: the subprotocol it picks, and that a closed one
is freed by reference counting, not left for the cyclic collector."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from runtime.gateway.connection import SUBPROTOCOL, Connection, select_subprotocol


async def _echo(ws: ServerConnection) -> None:
    # as the gateway's handler: a connection that ends is not an error (a logged error
    # would keep the connection's objects alive in the test's log capture)
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await ws.send(message)


def _server(**kwargs: object) -> object:
    return serve(_echo, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL], compression=None,
                 **kwargs)  # type: ignore[arg-type]


def _uri(server: object) -> str:
    port = next(iter(server.sockets)).getsockname()[1]  # type: ignore[attr-defined]
    return f"ws://127.0.0.1:{port}"


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees objects while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _left_for_the_collector() -> collections.Counter[str]:
    """The server-side websockets objects only the cyclic collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = collections.Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return collections.Counter({k: v for k, v in found.items()
                                if k in ("ServerConnection", "Connection", "ServerProtocol")})


async def _use_and_leave(uri: str, n: int, abort: bool) -> None:
    async def one() -> None:
        ws: ClientConnection = await connect(uri, subprotocols=[SUBPROTOCOL],
                                             compression=None)
        await ws.send("hello")
        assert await ws.recv() == "hello"
        if abort:  # gone without a close frame, as a phone losing its network
            ws.transport.abort()
        else:
            await ws.close()
    await asyncio.gather(*(one() for _ in range(n)))
    await asyncio.sleep(0.2)  # the server sees every connection lost


@pytest.mark.parametrize("abort", [False, True], ids=["closed", "aborted"])
async def test_a_closed_connection_is_freed_without_the_cyclic_collector(
        no_collector: None, abort: bool) -> None:
    async with _server(create_connection=Connection,
                       ping_interval=None) as server:
        await _use_and_leave(_uri(server), 20, abort)
    assert _left_for_the_collector() == {}


async def test_websockets_own_selector_leaves_closed_connections_to_the_collector(
        no_collector: None) -> None:
    """What `Connection` is for: with the selector given to `serve`, every closed
    connection waits for the collector (if websockets fixes this, `Connection` can go)."""
    async with _server(select_subprotocol=lambda conn, offered: select_subprotocol(offered),
                       ping_interval=None) as server:
        await _use_and_leave(_uri(server), 20, abort=False)
    assert _left_for_the_collector()["ServerConnection"] == 20


@pytest.mark.parametrize("offered,picked", [([SUBPROTOCOL], SUBPROTOCOL), ([], None),
                                            (["other", SUBPROTOCOL], SUBPROTOCOL)])
async def test_the_subprotocol_is_v1_when_offered_and_none_is_still_accepted(
        offered: list[str], picked: str | None) -> None:
    async with (_server(create_connection=Connection) as server,
                connect(_uri(server), subprotocols=offered or None,  # type: ignore[arg-type]
                        compression=None) as ws):
        assert ws.subprotocol == picked
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def test_send_text_now_writes_in_order_and_declines_while_the_peer_is_not_reading(
) -> None:
    """An idle connection takes a frame at once; a peer that stops reading fills the
    buffers until the transport asks writers to wait, and then `send_text_now` declines
    (the frame goes through `send`, which waits); once closed it declines too. Every
    frame arrives, in the order written."""
    results: list[bool] = []
    done = asyncio.Event()

    async def writer(ws: ServerConnection) -> None:
        assert isinstance(ws, Connection)
        with contextlib.suppress(ConnectionClosed):
            assert await ws.recv() == "go"
            results.append(ws.send_text_now("0"))
            await ws.send("1")
            chunk = "x" * 65536
            for i in range(2, 2000):  # at most ~128 MB: loopback buffers take a few MB
                if not ws.send_text_now(f"{i}:{chunk}"):
                    results.append(False)
                    await ws.send(f"{i}:{chunk}")
                    break
            else:
                results.append(True)  # never declined: the test below fails
            await ws.send("end")
            await done.wait()
            await ws.close()
            results.append(ws.send_text_now("after close"))

    async with serve(writer, "127.0.0.1", 0, create_connection=Connection,
                     compression=None, ping_interval=None, max_size=None) as server:
        client = await connect(_uri(server), compression=None, max_size=None,
                               max_queue=None)
        client.transport.pause_reading()  # a phone that stops reading
        await client.send("go")
        await asyncio.sleep(0.5)
        assert results == [True, False]
        client.transport.resume_reading()
        got = []
        while (frame := await client.recv()) != "end":
            got.append(frame if len(frame) < 10 else int(frame.split(":")[0]))
        assert got[:2] == ["0", "1"] and got[2:] == list(range(2, len(got)))
        done.set()
        with contextlib.suppress(ConnectionClosed):
            await client.recv()
        await asyncio.sleep(0.1)
        assert results == [True, False, False]
