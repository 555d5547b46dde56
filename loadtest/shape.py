"""Stage math for load shapes: a profile's stages laid out on the run's timeline.

`Timeline(profile).tick(t)` answers what Locust's `LoadTestShape.tick` must: the target user
count and the spawn rate to get there at run time `t`, or None when the run is over. The
Locust class that wraps it lives in `loadtest.user`; this module stays pure so it can be
tested without Locust.

Stages, in order, starting from 0 users:
- ramp: move to `users`, either over `for`, or at `rate`, or at the profile's spawn_rate;
- hold: keep the current count for `for` (the last stage may omit it: until the end);
- spike: jump to `users` at `rate` (default: within a second), stay `for`, then drop back
  to the previous count at the same rate; the drop is part of the spike.
After the last stage the count holds until `duration`; stages past `duration` are cut.
With `drain`, the count then goes to 0 for that many seconds before the run ends, so users
stop (and report) while the test still runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.profile import Profile


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    users: int
    rate: float
    label: str


class Timeline:
    def __init__(self, profile: Profile, drain: float = 0.0) -> None:
        self.duration = profile.duration
        self.drain = drain
        self.segments = build(profile)

    @property
    def peak(self) -> int:
        return max([s.users for s in self.segments] + [1])

    def tick(self, t: float) -> tuple[int, float] | None:
        if t >= self.duration + self.drain or not self.segments:
            return None
        if t >= self.duration:
            return 0, float(max(self.peak, 1))
        for seg in self.segments:
            if seg.start <= t < seg.end:
                return seg.users, seg.rate
        last = self.segments[-1]
        return last.users, last.rate


def build(profile: Profile) -> list[Segment]:
    base, rate0, duration = profile.users, profile.spawn_rate, profile.duration
    segments: list[Segment] = []
    t, current = 0.0, 0

    def add(length: float, users: int, rate: float, label: str) -> None:
        nonlocal t
        if length > 0 and t < duration:
            segments.append(Segment(t, min(t + length, duration), users, max(rate, 0.01), label))
        t += length

    for i, st in enumerate(profile.shape):
        label = f"{st.kind} {i}"
        if st.kind == "ramp":
            assert st.users is not None
            target = st.users.resolve(base)
            delta = abs(target - current)
            if st.duration is not None:
                length, rate = st.duration, (delta / st.duration if delta else rate0)
            else:
                rate = st.rate or rate0
                length = delta / rate
            add(length, target, rate, label)
            current = target
        elif st.kind == "hold":
            length = st.duration if st.duration is not None else max(duration - t, 0)
            add(length, current, rate0, label)
        else:  # spike
            assert st.users is not None and st.duration is not None
            target = st.users.resolve(base)
            delta = abs(target - current)
            rate = st.rate or max(float(delta), 1.0)
            add(st.duration, target, rate, label)
            add(max(delta / rate, 1.0), current, rate, f"{label} drop")
    if t < duration:
        add(duration - t, current, rate0, "hold to end")
    return segments
