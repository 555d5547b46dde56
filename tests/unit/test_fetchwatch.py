"""A consumer partition stuck out of fetching in a healthy group (runtime.core.fetchwatch):
librdkafka statistics in, a verdict out."""

from __future__ import annotations

import json
from typing import Any

from runtime.core.fetchwatch import FetchWatch


def report(join: str = "steady", **states: str) -> dict[str, Any]:
    """A statistics report of one consumer of `msg.events`: partition -> fetch state."""
    parts: dict[str, Any] = {"-1": {"desired": False, "fetch_state": "none"}}
    for name, state in states.items():
        parts[name.lstrip("p")] = {"desired": True, "fetch_state": state,
                                   "next_offset": 7, "ls_offset": 9}
    return {"cgrp": {"state": "up", "join_state": join, "assignment_size": len(states)},
            "topics": {"msg.events": {"partitions": parts}}}


def test_a_partition_out_of_active_past_the_limit_in_a_steady_group_is_stuck() -> None:
    watch = FetchWatch(limit=30)
    assert watch.observe(report(p0="validate-epoch-wait"), 100.0) is None
    assert watch.observe(report(p0="validate-epoch-wait"), 130.0) is None  # not past it yet
    verdict = watch.observe(report(p0="validate-epoch-wait"), 131.0)
    assert verdict is not None
    assert "msg.events[0] validate-epoch-wait for 31s" in verdict and "offset 7" in verdict


def test_active_partitions_and_unassigned_ones_are_never_stuck() -> None:
    watch = FetchWatch(limit=30)
    for t in range(0, 300, 5):
        assert watch.observe(report(p0="active", p1="active"), float(t)) is None
    stats = report(p0="active")
    stats["topics"]["msg.events"]["partitions"]["3"] = {"desired": False,
                                                        "fetch_state": "stopped"}
    assert watch.observe(stats, 400.0) is None and watch.observe(stats, 500.0) is None


def test_going_back_to_active_starts_the_count_again() -> None:
    watch = FetchWatch(limit=30)
    watch.observe(report(p0="offset-wait"), 0.0)
    watch.observe(report(p0="active"), 20.0)  # an offset lookup that was answered
    assert watch.observe(report(p0="offset-wait"), 25.0) is None
    assert watch.observe(report(p0="offset-wait"), 50.0) is None
    assert watch.observe(report(p0="offset-wait"), 56.0) is not None


def test_a_group_that_is_not_steady_is_not_judged_and_restarts_the_count() -> None:
    """A broker down or a rebalance: no new consumer would fetch either."""
    watch = FetchWatch(limit=30)
    watch.observe(report(p0="offset-query"), 0.0)
    assert watch.observe(report("wait-join", p0="offset-query"), 100.0) is None
    assert watch.observe(report(p0="offset-query"), 101.0) is None  # counts from here
    assert watch.observe(report(p0="offset-query"), 131.5) is not None


def test_only_the_stuck_partitions_are_named() -> None:
    watch = FetchWatch(limit=10)
    watch.observe(report(p0="active", p1="validate-epoch-wait"), 0.0)
    verdict = watch.observe(report(p0="active", p1="validate-epoch-wait"), 11.0)
    assert verdict is not None and "[1]" in verdict and "[0]" not in verdict


def test_odd_reports_are_no_verdict() -> None:
    watch = FetchWatch(limit=1)
    assert watch.observe_json("not json", 0.0) is None
    assert watch.observe_json("[1, 2]", 5.0) is None
    assert watch.observe({}, 10.0) is None  # a producer's report: no group
    assert watch.observe_json(json.dumps(report(p0="active")), 20.0) is None


def test_a_member_without_any_partition_is_not_judged() -> None:
    """Another consumer of the group (an operator's) may hold every partition."""
    watch = FetchWatch(limit=1)
    empty = report()
    assert empty["cgrp"]["assignment_size"] == 0
    assert watch.observe(empty, 0.0) is None and watch.observe(empty, 100.0) is None


def test_the_unassigned_partition_is_never_judged() -> None:
    """librdkafka's internal partition -1 of each topic, whatever it reports."""
    watch = FetchWatch(limit=1)
    stats = report(p0="active")
    stats["topics"]["msg.events"]["partitions"]["-1"] = {"desired": True,
                                                         "fetch_state": "none"}
    assert watch.observe(stats, 0.0) is None and watch.observe(stats, 100.0) is None


def test_a_report_is_judged_at_the_time_it_was_made() -> None:
    """Reports arrive through polls, maybe late: their own `ts` (microseconds of
    librdkafka's monotonic clock) counts, not the time they were handed over."""
    watch = FetchWatch(limit=30)
    stuck = report(p0="offset-wait")
    stuck["ts"] = 1_000_000
    assert watch.observe_json(json.dumps(stuck), 500.0) is None
    stuck["ts"] = 20_000_000  # 19 s later, though handed over "at" 600
    assert watch.observe_json(json.dumps(stuck), 600.0) is None
    stuck["ts"] = 32_000_000
    verdict = watch.observe_json(json.dumps(stuck), 601.0)
    assert verdict is not None and "for 31s" in verdict
