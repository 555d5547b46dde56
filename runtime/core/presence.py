"""Presence rules: sessions and heartbeats in, online/offline changes out.

- A user is online while at least one of their sessions is alive.
- A session is alive until it disconnects or goes `ttl` seconds without a
  heartbeat (any frame or ping counts).
- Going offline waits `grace` seconds after the last session ends
  (hysteresis), so a reconnect or a network blip does not flap the state.
- Lazy: changes are emitted only for users some watcher watches.
- Several regions: each region's tracker knows its own sessions; the other
  regions' verdicts come in through `remote` (online there or not). A user is
  online if online in any region. With `export`, every local flip (watched or
  not) is queued in `outbox` for the shell to tell the other regions.

Time is passed in as seconds (float) by the shell.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class PresenceState:
    user: str
    online: bool
    last_active: float  # seconds, same clock as the inputs

    @property
    def state(self) -> str:
        return "online" if self.online else "offline"


@dataclass(frozen=True)
class Change:
    """`state` changed; tell `watchers` (the watching sessions)."""

    state: PresenceState
    watchers: frozenset[str]


class PresenceTracker:
    def __init__(self, *, ttl: float = 60.0, grace: float = 5.0, export: bool = False) -> None:
        self.ttl = ttl
        self.grace = grace
        self.export = export
        self.outbox: list[PresenceState] = []  # local flips for the other regions
        self._remote: dict[str, dict[str, PresenceState]] = defaultdict(dict)  # user -> region
        self._sessions: dict[str, dict[str, float]] = defaultdict(dict)  # user -> session -> seen
        self._online: set[str] = set()
        self._last_active: dict[str, float] = {}
        self._offline_at: dict[str, float] = {}  # user -> when the grace period ends
        self._watching: dict[str, frozenset[str]] = {}  # watcher session -> users
        self._watchers: dict[str, set[str]] = defaultdict(set)  # user -> watcher sessions

    # -- sessions ---------------------------------------------------------
    def connect(self, user: str, session: str, now: float) -> list[Change]:
        self._sessions[user][session] = now
        self._last_active[user] = now
        self._offline_at.pop(user, None)
        if user in self._online:
            return []
        elsewhere = self._online_elsewhere(user)
        self._online.add(user)
        self._flipped(user)
        return [] if elsewhere else self._changed(user)

    def heartbeat(self, user: str, session: str, now: float) -> None:
        sessions = self._sessions.get(user)
        if sessions is not None and session in sessions:
            sessions[session] = now
            self._last_active[user] = now

    def disconnect(self, user: str, session: str, now: float) -> list[Change]:
        self.unwatch(session)
        sessions = self._sessions.get(user)
        if sessions is None or sessions.pop(session, None) is None:
            return []
        self._last_active[user] = max(self._last_active.get(user, now), now)
        if not sessions:
            del self._sessions[user]
            self._offline_at[user] = now + self.grace
        return []

    def tick(self, now: float) -> list[Change]:
        """Expire silent sessions and end grace periods that are over."""
        # in the order they went silent, so the grace counts from the last one to end
        expired = sorted((seen, user, session) for user, sessions in self._sessions.items()
                         for session, seen in sessions.items() if now - seen > self.ttl)
        for seen, user, session in expired:
            self.unwatch(session)
            sessions = self._sessions[user]
            del sessions[session]
            if not sessions:
                del self._sessions[user]
                self._offline_at[user] = seen + self.ttl + self.grace
        changes: list[Change] = []
        for user, deadline in list(self._offline_at.items()):
            if now >= deadline:
                del self._offline_at[user]
                if user in self._online:
                    self._online.discard(user)
                    self._flipped(user)
                    if not self._online_elsewhere(user):
                        changes.extend(self._changed(user))
        return changes

    # -- other regions ----------------------------------------------------
    def remote(self, region: str, state: PresenceState) -> list[Change]:
        """What `region` says of `state.user` (online there or not, last active)."""
        before = self.is_online(state.user)
        if state.online or state.last_active:
            self._remote[state.user][region] = state
        if self.is_online(state.user) == before:
            return []
        return self._changed(state.user)

    def _online_elsewhere(self, user: str) -> bool:
        return any(s.online for s in self._remote.get(user, {}).values())

    def _flipped(self, user: str) -> None:
        if self.export:
            self.outbox.append(PresenceState(user, user in self._online,
                                             self._last_active.get(user, 0.0)))

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (for the shell's timer)."""
        times = list(self._offline_at.values())
        times += [seen + self.ttl for s in self._sessions.values() for seen in s.values()]
        return min(times) if times else None

    def has_session(self, user: str, session: str) -> bool:
        return session in self._sessions.get(user, {})

    def state(self, user: str) -> PresenceState:
        remote = self._remote.get(user, {}).values()
        last = max([self._last_active.get(user, 0.0), *(s.last_active for s in remote)])
        return PresenceState(user, self.is_online(user), last)

    def is_online(self, user: str) -> bool:
        return user in self._online or self._online_elsewhere(user)

    # -- watching ---------------------------------------------------------
    def watch(self, watcher: str, users: tuple[str, ...] | list[str]) -> list[PresenceState]:
        """Replace `watcher`'s watch set; returns the current state of each user."""
        self.unwatch(watcher)
        wanted = frozenset(users)
        self._watching[watcher] = wanted
        for user in wanted:
            self._watchers[user].add(watcher)
        return [self.state(u) for u in dict.fromkeys(users)]

    def unwatch(self, watcher: str) -> None:
        for user in self._watching.pop(watcher, frozenset()):
            subs = self._watchers.get(user)
            if subs is not None:
                subs.discard(watcher)
                if not subs:
                    del self._watchers[user]

    def is_watching(self, watcher: str) -> bool:
        return watcher in self._watching

    def watched(self) -> set[str]:
        return set(self._watchers)

    def _changed(self, user: str) -> list[Change]:
        watchers = self._watchers.get(user)
        if not watchers:
            return []  # lazy: nobody watches this user
        return [Change(self.state(user), frozenset(watchers))]


def presence_frame(state: PresenceState) -> dict[str, object]:
    """The `presence` frame a watcher gets for `state`."""
    return {"t": "presence", "user": state.user, "state": state.state,
            "last_active": int(state.last_active * 1000)}
