"""Restart policy of the supervisor, with no I/O: exits in, decisions out.

Exponential backoff with jitter between restarts; a process that stayed up
for `stable_after` seconds starts its count afresh; more than `max_retries`
quick failures in a row end in FATAL (supervisord's startretries).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.2  # +-20% of the delay
    max_retries: int = 5
    stable_after: float = 10.0


@dataclass(frozen=True)
class Decision:
    fatal: bool
    delay: float = 0.0


class RestartTracker:
    def __init__(self, policy: RestartPolicy = RestartPolicy()) -> None:
        self.policy = policy
        self.consecutive = 0
        self.total = 0

    def on_exit(self, uptime: float, rand: float) -> Decision:
        """`uptime`: seconds the process ran; `rand`: uniform in [0, 1) for the jitter."""
        p = self.policy
        if uptime >= p.stable_after:
            self.consecutive = 0
        self.consecutive += 1
        if self.consecutive > p.max_retries:
            return Decision(True)
        delay = p.base_delay * p.factor ** (self.consecutive - 1)
        delay *= 1 + p.jitter * (2 * rand - 1)
        self.total += 1
        # cap after the jitter: max_delay is a promise to the operator
        return Decision(False, max(0.0, min(p.max_delay, delay)))

    def reset(self) -> None:
        self.consecutive = 0
