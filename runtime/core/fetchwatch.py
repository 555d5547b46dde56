"""When a consumer's partition has stopped fetching for good: librdkafka's statistics in,
a verdict out. Pure: no clock, no client.

librdkafka has been reported to leave an assigned partition in a state that never
fetches again after its leader moved or a broker came back (an offset request or an
offset validation, `offset-wait` or `validate-epoch-wait`, never answered), while the
consumer's group membership looks healthy, heartbeats and all; only a new consumer
recovers. A router in that state stores and delivers nothing more. So: a partition that
is assigned (`desired`), in a group that is `steady`, and not `active` for longer than
`limit` seconds is stuck. (A member with no partition is not judged: another consumer
in the same group, an operator's for one, may hold them all.)

A group that is not steady (a broker down, a rebalance) is not judged: the consumer
cannot fetch then, and a new one could not either. Neither is a consumer the
application stopped polling (statistics arrive only through its polls).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ACTIVE = "active"
# librdkafka's internal "unassigned" partition of each topic
_UA = "-1"


@dataclass
class FetchWatch:
    limit: float = 30.0  # seconds a partition may spend out of `active` in a steady group
    # (topic, partition) -> since when it has been assigned and not active
    _since: dict[tuple[str, str], float] = field(default_factory=dict)

    def observe(self, stats: dict[str, Any], now: float) -> str | None:
        """Take one statistics report (librdkafka's JSON, parsed) taken at `now`; a
        description of the stuck partitions, or None."""
        group = stats.get("cgrp") or {}
        if group.get("join_state") != "steady":
            self._since.clear()  # rejoining: states restart once it is steady again
            return None
        seen: set[tuple[str, str]] = set()
        stuck: list[str] = []
        for topic, info in (stats.get("topics") or {}).items():
            for part, p in (info.get("partitions") or {}).items():
                if part == _UA or not p.get("desired"):
                    continue
                key = (topic, part)
                state = p.get("fetch_state", "")
                if state == ACTIVE:
                    continue
                seen.add(key)
                since = self._since.setdefault(key, now)
                if now - since > self.limit:
                    stuck.append(f"{topic}[{part}] {state} for {now - since:.0f}s "
                                 f"(next offset {p.get('next_offset')}, "
                                 f"stable end {p.get('ls_offset')})")
        for key in set(self._since) - seen:
            del self._since[key]
        return "; ".join(stuck) or None

    def observe_json(self, report: str, now: float) -> str | None:
        """`observe` of a report as librdkafka hands it over (a malformed one: None), at
        the time it was made (its `ts`, librdkafka's monotonic clock in microseconds):
        reports reach the application only through its polls, so one can arrive late,
        after records fetched before it; `now` when it has none."""
        try:
            stats = json.loads(report)
        except ValueError:
            return None
        if not isinstance(stats, dict):
            return None
        ts = stats.get("ts")
        return self.observe(stats, ts / 1e6 if isinstance(ts, int | float) else now)
