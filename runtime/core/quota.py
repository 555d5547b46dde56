"""Caps on what one user may hold at a time, counted in a sliding window.

Upload slots are granted by the gateway and used (or not) later, somewhere
else; a user asking for slots in a loop would fill the blob store's pending
uploads. `Window` counts the grants of each key that have not expired yet and
refuses past the cap. Time is passed in, so the rule is testable without a clock.
"""

from __future__ import annotations

from collections import deque


class Window:
    """At most `cap` grants per key within `ttl` seconds; keys with none cost nothing."""

    def __init__(self, cap: int, ttl: float) -> None:
        self.cap = cap
        self.ttl = ttl
        self._grants: dict[str, deque[float]] = {}

    def take(self, key: str, now: float) -> bool:
        """Grant one to `key` at `now` if it holds fewer than `cap` unexpired ones."""
        grants = self._grants.get(key)
        if grants is None:
            grants = self._grants[key] = deque()
        while grants and grants[0] <= now - self.ttl:
            grants.popleft()
        if len(grants) >= self.cap:
            return False
        grants.append(now)
        if len(self._grants) > 4 * self.cap + 1024:
            self._prune(now)
        return True

    def held(self, key: str, now: float) -> int:
        grants = self._grants.get(key, ())
        return sum(1 for t in grants if t > now - self.ttl)

    def _prune(self, now: float) -> None:
        for key in [k for k, g in self._grants.items() if not g or g[-1] <= now - self.ttl]:
            del self._grants[key]
