"""Per-connection token bucket with an abuse cut-off.

Time is passed in (seconds, monotonic), so the rules are testable without a
clock. A frame over the rate is refused with `retry_ms`; a client that keeps
sending while refused (more strikes than `max_strikes` in a row) is cut off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_ms: int = 0
    close: bool = False


class TokenBucket:
    def __init__(self, rate: float, burst: int, max_strikes: int = 50) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_strikes = max_strikes
        self.tokens = float(burst)
        self.strikes = 0
        self._at: float | None = None

    def check(self, now: float) -> Verdict:
        if self._at is not None and now > self._at:
            self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
        # a float refill can land a hair under one token after exactly retry_ms (more so
        # at large monotonic times, where the clock difference loses precision)
        if self.tokens >= 1 - 1e-6:
            self.tokens = max(0.0, self.tokens - 1)
            self.strikes = 0
            return Verdict(True)
        self.strikes += 1
        retry_ms = max(1, math.ceil((1 - self.tokens) / self.rate * 1000))
        return Verdict(False, retry_ms, self.strikes > self.max_strikes)
