"""What a stand-in answers: scripted per device token, 200 by default; every request kept."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

# outcomes a test can script
OK = "ok"
INVALID = "invalid"  # FCM 404 UNREGISTERED, APNs 410 Unregistered
UNAVAILABLE = "unavailable"  # 503 with Retry-After
TOO_MANY = "too_many"  # 429 with Retry-After


@dataclass
class Outcome:
    kind: str = OK
    retry_after: float | None = None


@dataclass
class Received:
    at: float  # time.time() when the request arrived
    token: str
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Script:
    default: Outcome = field(default_factory=Outcome)
    per_token: dict[str, list[Outcome]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # requests not as documented
    lock: threading.Lock = field(default_factory=threading.Lock)

    def then(self, token: str, *outcomes: Outcome | str) -> None:
        """Answer the next requests for this token with these outcomes, in order."""
        with self.lock:
            self.per_token.setdefault(token, []).extend(
                o if isinstance(o, Outcome) else Outcome(o) for o in outcomes)

    def next(self, token: str) -> Outcome:
        with self.lock:
            queue = self.per_token.get(token)
            return queue.pop(0) if queue else self.default

    def record(self, token: str, status: int, headers: dict[str, str], body: Any) -> None:
        with self.lock:
            self.received.append(Received(time.time(), token, status, headers, body))

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def for_token(self, token: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.token == token]
