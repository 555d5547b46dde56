"""Delivery and read watermarks, cumulative and monotonic.

Per (user, conversation): ``read <= delivered <= head``. A device's ack moves
its own cursor and the user's delivered watermark; a read moves both
watermarks (what was read was delivered). Values above the head are clamped,
values below the current mark change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Watermark:
    delivered: int = 0
    read: int = 0


@dataclass(frozen=True)
class Update:
    mark: Watermark
    delivered_moved: bool
    read_moved: bool


def clamp(seq: int, head: int) -> int:
    return max(0, min(seq, head))


def apply_ack(mark: Watermark, seq: int, head: int) -> Update:
    seq = clamp(seq, head)
    if seq <= mark.delivered:
        return Update(mark, False, False)
    return Update(Watermark(seq, mark.read), True, False)


def apply_read(mark: Watermark, seq: int, head: int) -> Update:
    seq = clamp(seq, head)
    delivered = max(mark.delivered, seq)
    read = max(mark.read, seq)
    return Update(Watermark(delivered, read), delivered != mark.delivered, read != mark.read)


def advance_cursor(cursor: int, seq: int, head: int) -> int:
    """A device cursor: the highest seq this device acked, never moving back."""
    return max(cursor, clamp(seq, head))
