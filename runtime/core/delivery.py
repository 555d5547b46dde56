"""Per-connection, per-conversation delivery ordering.

A `ConvStream` decides, for each sequenced event offered to one device
connection, whether to send it now, drop it (already sent), skip it (the
device's own message: it got `sent` instead), or fetch the missing range from
the store first. With it, a device sees every conversation in seq order with
no gaps and no duplicates on a connection, whatever order events arrive in
and however the resume backlog and live traffic interleave.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Offer(enum.Enum):
    DELIVER = "deliver"
    SKIP = "skip"  # the device's own message: it advances the stream, nothing is sent
    DROP = "drop"  # at or below what this connection already has
    FILL = "fill"  # a gap: read the store after `last`, then call `filled`
    WAIT = "wait"  # a fill is running and will cover it


@dataclass(frozen=True)
class Entry:
    seq: int
    prev: int
    own: bool = False


class ConvStream:
    def __init__(self, last: int = 0) -> None:
        self.last = last
        self.filling = False
        self._pending = False
        self.hole = False  # the last page stopped at a hole (see `filled`)

    def offer(self, entry: Entry) -> Offer:
        if entry.seq <= self.last:
            return Offer.DROP
        if self.filling:
            self._pending = True
            return Offer.WAIT
        if entry.prev == self.last:
            self.last = entry.seq
            return Offer.SKIP if entry.own else Offer.DELIVER
        self.filling = True
        return Offer.FILL

    def start_fill(self) -> bool:
        """Begin a fill (e.g. the resume backlog); False when one is already running."""
        if self.filling:
            self._pending = True
            return False
        self.filling = True
        return True

    def filled(self, page: Iterable[Entry], page_full: bool,
               accept_holes: bool = True) -> tuple[list[Entry], bool]:
        """Take one page read from the store after `last`.

        Returns the entries to send, in order, and whether to read another page.
        The store is the authority, so the page is taken as the chain; unless
        `accept_holes` is False, in which case the page is taken only up to a hole (an
        entry whose `prev` is above `last`: a store that is still receiving what another
        data center wrote during a partition), `hole` is set, and the caller reads again
        after a pause. An entry of a later epoch whose `prev` is below `last` is no hole:
        the seqs in between were an old home's, moved by a failover.
        """
        out: list[Entry] = []
        self.hole = False
        for entry in page:
            if entry.seq <= self.last:
                continue
            if not accept_holes and entry.prev > self.last:
                self.hole = True
                self._pending = False
                return out, True
            self.last = entry.seq
            if not entry.own:
                out.append(entry)
        if page_full or self._pending:
            self._pending = False
            return out, True
        self.filling = False
        return out, False

    def abort_fill(self) -> None:
        """A fill failed (store unavailable): the next offer starts a new one."""
        self.filling = False
        self._pending = False
