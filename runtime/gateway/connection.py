"""The gateway's WebSocket connection: freed as soon as it closes.

A connection's objects (its TLS state with uvloop's 256 KiB read buffer among
them, about 65 objects) must go when the connection does. Two reference cycles
of `websockets` kept them for the cyclic collector instead, and the gateway
runs that collector rarely (its thresholds are high, so that tens of thousands
of live connections are not rescanned all the time): a connection that had
lived long enough to reach the oldest generation stayed until a full
collection. After one 30 s load step of 400 clients, 26,000 such objects were
waiting on a gateway with nothing connected. The cycles:

- `serve(select_subprotocol=...)` wraps the callback in a closure over the
  connection, and the connection's protocol keeps it as a method bound to
  itself. `Connection` gives the protocol a plain function instead, which
  refers to neither.
- A peer that goes away without a close frame leaves the protocol holding the
  parser's `EOFError`, whose traceback holds the parser's frame, which holds
  the protocol. `Connection` drops that traceback once the connection is lost
  (the exception stays: it is the cause of the `ConnectionClosedError`).

It also sends a text frame without a task or an `await` when nothing stands in
the way (`send_text_now`): most frames a gateway writes find the connection
idle, and `send`'s coroutine, its async context and the writer task each frame
needed added about 5 us of CPU to the write's 8 (benchmarks/gateway_writes.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("msgctl.v1")


def select_subprotocol(offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """msgctl.v1 when the client offers it; none otherwise, since browsers and simple
    clients may offer none (the protocol is still v1)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


class Connection(ServerConnection):
    """A `ServerConnection` that no reference cycle keeps once it is closed."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        # the protocol calls self.select_subprotocol(offered): an attribute of its own
        # that is a plain function takes just that, and holds no reference back
        protocol.select_subprotocol = select_subprotocol  # type: ignore[method-assign,assignment]

    def send_text_now(self, text: str) -> bool:
        """Write one text frame at once when the connection is open, no fragmented
        message is being sent and the transport is not asking writers to wait (its
        buffer is under the write limit); False when nothing was written, and the
        frame must go through `send`, which waits for all of that."""
        if self.paused or self.send_in_progress is not None or \
                self.protocol.state is not State.OPEN:
            return False
        self.protocol.send_text(text.encode())
        try:
            self.send_data()
        except Exception:  # as `send` does: the connection is done for
            self.transport.abort()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        failed = self.protocol.parser_exc
        if failed is not None:
            failed.__traceback__ = None
