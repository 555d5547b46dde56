"""The summary: percentiles like Locust's, totals, counters from every process, the verdict."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from loadtest.report import percentile, render, summarize


def test_percentile_matches_locust() -> None:
    # locust.stats.calculate_response_time_percentile, counted from the top
    hist = {1.0: 50, 2.0: 40, 10.0: 9, 100.0: 1}
    assert percentile(hist, 100, 0.4) == 1.0
    assert percentile(hist, 100, 0.5) == 2.0
    assert percentile(hist, 100, 0.9) == 10.0
    assert percentile(hist, 100, 0.95) == 10.0
    assert percentile(hist, 100, 0.99) == 100.0
    assert percentile(hist, 100, 1.0) == 100.0
    assert percentile({}, 0, 0.5) is None


def _entry(name: str, n: int, failures: int, times: dict[str, int]) -> dict[str, object]:
    return {"name": name, "method": "WS", "num_requests": n, "num_none_requests": 0,
            "num_failures": failures, "total_response_time": sum(float(k) * v
                                                                 for k, v in times.items()),
            "max_response_time": max(float(k) for k in times), "min_response_time": 0,
            "response_times": times, "start_time": 1000.0, "last_request_timestamp": 1010.0}


def write_run(out: Path, order: int = 0, failures: int = 0) -> None:
    entries = [_entry("send->sent", 100, failures, {"2": 90, "5": 10}),
               _entry("connect", 10, 0, {"8": 10}),
               _entry("send->delivered", 90, 0, {"3": 89, "40": 1})]
    if order:
        entries.append(_entry("order", order, order, {"0": order}))
    (out / "locust.json").write_text(json.dumps(entries))
    (out / "locust_failures.csv").write_text(
        "Method,Name,Error,Occurrences,First Seen,Last Seen\n"
        + (f"WS,send->sent,ReplyTimeout('no reply'),{failures},1,2\n" if failures else ""))
    (out / "counters-1.json").write_text(json.dumps({"sent": 60, "delivered": 50,
                                                     "delivered_live": 50}))
    (out / "counters-2.json").write_text(json.dumps({"sent": 40, "delivered": 40,
                                                     "delivered_live": 40, "duplicates": 3}))


def test_summary_of_a_clean_run(tmp_path: Path) -> None:
    write_run(tmp_path)
    s = summarize(tmp_path, {"profile": {"name": "steady", "users": 5}, "workers": 2,
                             "out": str(tmp_path), "ws_url": "ws://127.0.0.1:1/v1/ws"})
    assert list(s["requests"]) == ["connect", "send->sent", "send->delivered"]
    sent = s["requests"]["send->sent"]
    assert (sent["count"], sent["failures"], sent["p50_ms"], sent["p99_ms"]) == (100, 0, 2, 5)
    assert sent["rps"] == 10.0
    assert s["totals"] == {"count": 200, "failures": 0, "rps": 20.0}
    assert s["messages"]["sent"] == 100 and s["messages"]["delivered"] == 90
    assert s["messages"]["duplicates"] == 3
    assert s["order_violations"] == 0 and s["ok"] is True
    console = Console(record=True, width=150)
    render(s, console)
    text = console.export_text()
    assert "send->delivered" in text and "ok" in text and "order violations: 0" in text


def test_failures_and_order_violations_fail_the_run(tmp_path: Path) -> None:
    write_run(tmp_path, order=2, failures=1)
    s = summarize(tmp_path, {"profile": {}})
    assert s["order_violations"] == 2 and s["totals"]["failures"] == 3
    assert s["failures"][0]["name"] == "send->sent"
    assert s["ok"] is False
    console = Console(record=True, width=150)
    render(s, console)
    assert "FAILED" in console.export_text()


def test_a_problem_fails_the_run(tmp_path: Path) -> None:
    write_run(tmp_path)
    assert summarize(tmp_path, {"problem": "interrupted"})["ok"] is False
