"""Delivery and read watermarks, cumulative and monotonic.

Per (user, conversation): ``read <= delivered <= head``. A device's ack moves
its own cursor and the user's delivered watermark; a read moves both
watermarks (what was read was delivered). Values above the head are clamped,
values below the current mark change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class MarkOp:
    """One ack or read of a device, as the sequencer receives it."""

    kind: str  # "ack" | "read"
    conv: str
    user: str
    device: str
    seq: int


@dataclass
class MarksPlan:
    """What a batch of acks and reads changes: the new watermarks, and for each
    (conversation, user, "delivered"|"read") that moved, the device that moved it last."""

    marks: dict[tuple[str, str], Watermark] = field(default_factory=dict)
    moved: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def receipts(self) -> list[tuple[str, str, str, int, str]]:
        """(conv, user, kind, seq, device) per moved watermark: receipts are cumulative,
        so a batch publishes only the newest of each."""
        out = []
        for (conv, user, kind), device in self.moved.items():
            mark = self.marks[(conv, user)]
            out.append((conv, user, kind, mark.delivered if kind == "delivered" else mark.read,
                        device))
        return out


def plan_marks(ops: Iterable[MarkOp], current: Callable[[str, str], Watermark],
               head: Callable[[str], int]) -> MarksPlan:
    """Apply acks and reads in order; `current(conv, user)` is the watermark before the
    batch, `head(conv)` the head to clamp against (including the batch's own messages)."""
    plan = MarksPlan()
    for op in ops:
        k = (op.conv, op.user)
        mark = plan.marks.get(k) or current(*k)
        upd = (apply_ack if op.kind == "ack" else apply_read)(mark, op.seq, head(op.conv))
        if not (upd.delivered_moved or upd.read_moved):
            continue
        plan.marks[k] = upd.mark
        if upd.delivered_moved:
            plan.moved[(*k, "delivered")] = op.device
        if upd.read_moved:
            plan.moved[(*k, "read")] = op.device
    return plan
