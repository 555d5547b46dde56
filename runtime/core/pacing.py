"""When the sequencer may start its next Kafka transaction: a pure pacing rule.

A transaction costs the broker about the same whatever it holds (AddPartitionsToTxn,
the produce requests, EndTxn, the commit markers), and the router, the store writer
and the Redis publishes that follow it cost the same per batch. At a few hundred
msgs/s a batch is one or two sends, so that fixed cost is most of the region's CPU.
Starting transactions at least `interval` apart lets the sends that arrive meanwhile
join the next one: a send waits at most `interval` more, and only while transactions
follow each other that closely. A full batch never waits.
"""

from __future__ import annotations


class TxnPacer:
    """The earliest start of the next transaction, from the start of the previous one."""

    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("interval must be 0 or more seconds")
        self.interval = interval
        self._last: float | None = None

    def delay(self, now: float, pending: int, full: int) -> float:
        """Seconds to wait at `now` before starting a transaction of `pending` records
        (`full`: the most one takes). 0 once `interval` has passed since the previous
        start, for a full batch, and before the first transaction."""
        if self._last is None or pending >= full:
            return 0.0
        return min(self.interval, max(0.0, self._last + self.interval - now))

    def started(self, now: float) -> None:
        """A transaction starts at `now`."""
        self._last = now
