"""Per-connection token bucket with an abuse cut-off.

Time is passed in (seconds, monotonic), so the rules are testable without a
clock. Frames and their bytes are both counted: 200 small frames a second are
chat, 200 frames of 64 KiB a second are a flood. A frame over the rate is
refused with `retry_ms`; a client that keeps sending while refused (more
strikes than `max_strikes` in a row) is cut off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_ms: int = 0
    close: bool = False


ALLOWED = Verdict(True)  # one for every frame let through: it is immutable


class TokenBucket:
    """Frames per second, and optionally bytes per second, with one strike count.

    A frame is taken only when both pools have room; a refused frame takes nothing
    from either. A frame larger than the byte burst waits for a full pool (never
    forever).
    """

    def __init__(self, rate: float, burst: int, max_strikes: int = 50, *,
                 byte_rate: float | None = None, byte_burst: int | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        if byte_rate is not None and (byte_rate <= 0 or not byte_burst or byte_burst < 1):
            raise ValueError("byte rate must be > 0 and byte burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_strikes = max_strikes
        self.tokens = float(burst)
        self.byte_rate = byte_rate
        self.byte_burst = byte_burst or 0
        self.byte_tokens = float(self.byte_burst)
        self.strikes = 0
        self._at: float | None = None

    def check(self, now: float, size: int = 0) -> Verdict:
        """Take one frame of `size` bytes at `now` (monotonic seconds), or refuse it."""
        if self._at is not None and now > self._at:
            elapsed = now - self._at
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            if self.byte_rate is not None:
                self.byte_tokens = min(self.byte_burst,
                                       self.byte_tokens + elapsed * self.byte_rate)
        if self._at is None or now > self._at:
            self._at = now
        need = min(size, self.byte_burst)
        # a float refill can land a hair under one token after exactly retry_ms (more so
        # at large monotonic times, where the clock difference loses precision)
        frame_ok = self.tokens >= 1 - 1e-6
        bytes_ok = self.byte_rate is None or self.byte_tokens >= need * (1 - 1e-9) - 1e-6
        if frame_ok and bytes_ok:
            self.tokens = max(0.0, self.tokens - 1)
            if self.byte_rate is not None:
                self.byte_tokens = max(0.0, self.byte_tokens - need)
            self.strikes = 0
            return ALLOWED
        self.strikes += 1
        wait = 0.0 if frame_ok else (1 - self.tokens) / self.rate
        if not bytes_ok and self.byte_rate is not None:
            wait = max(wait, (need - self.byte_tokens) / self.byte_rate)
        retry_ms = max(1, math.ceil(wait * 1000))
        return Verdict(False, retry_ms, self.strikes > self.max_strikes)
