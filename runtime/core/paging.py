"""Pages of history bounded in bytes as well as in messages.

A `sync` reply, a REST page and a resume fill each carry up to `limit`
messages, but a message's JSON can be six times its body (non-ASCII text is
sent as `\\uXXXX` escapes): 100 messages of 16 KiB non-ASCII bodies make a
~5 MB frame, past the connection's 4 MiB send queue, and a client that syncs
again after the close would loop forever. So a page also stops at
`budget` bytes of encoded messages (1 MiB, or a quarter
of a smaller send queue) (always holding at least one) and says
`more`, and the client reads on from the last seq it got.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

REPLY_BYTES = 1024 * 1024  # a quarter of the default 4 MiB send queue


def budget(send_queue_bytes: int) -> int:
    """The page budget for a connection whose send queue holds `send_queue_bytes`."""
    return min(REPLY_BYTES, send_queue_bytes // 4)


class Wired(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


def wire_size(wire: dict[str, Any]) -> int:
    """Bytes of one message in a frame, at most: json's ASCII escapes of text outside
    ASCII take at least the bytes of the UTF-8 the gateway writes (runtime.core.jsontext)."""
    return len(json.dumps(wire, separators=(",", ":"))) + 1  # + the comma between


def fitting(msgs: Sequence[Wired], budget: int = REPLY_BYTES) -> int:
    """How many of `msgs`, from the first, fit in `budget` bytes (at least one)."""
    used = 0
    for n, msg in enumerate(msgs):
        used += wire_size(msg.to_wire())
        if n and used > budget:
            return n
    return len(msgs)


def page(msgs: Sequence[Wired], limit: int,
         budget: int = REPLY_BYTES) -> tuple[list[dict[str, Any]], bool]:
    """From a read of `limit` + 1 messages: the wire form of those to send, and `more`
    (the extra one was read, or the byte budget cut the page short)."""
    out: list[dict[str, Any]] = []
    used = 0
    for msg in msgs[:limit]:
        wire = msg.to_wire()
        used += wire_size(wire)
        if out and used > budget:
            return out, True
        out.append(wire)
    return out, len(msgs) > limit
