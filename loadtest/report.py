"""The run's summary: Locust's final stats plus the users' counters, as JSON and a table.

Inputs in the output directory: `locust.json` (Locust's final stats with the response-time
histograms, written at shutdown), `locust_failures.csv` (failure messages) and
`counters-<pid>.json` (one per process that ran users: messages sent, delivered, ...).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ORDER = ["connect", "create", "send->sent", "send->delivered", "sync", "catch-up", "watch",
         "order", "connection", "error"]


def percentile(hist: dict[float, int], total: int, p: float) -> float | None:
    """Like Locust's: the response time below which a fraction `p` of requests fall."""
    if not total or not hist:
        return None
    limit = int(total * p)
    processed = 0
    for value in sorted(hist, reverse=True):
        processed += hist[value]
        if total - processed <= limit:
            return value
    return min(hist)


def _entry(raw: dict[str, Any], seconds: float) -> dict[str, Any]:
    hist = {float(k): int(v) for k, v in (raw.get("response_times") or {}).items()}
    n = int(raw.get("num_requests", 0))
    timed = n - int(raw.get("num_none_requests", 0))

    def ms(p: float) -> float | None:
        v = percentile(hist, timed, p)
        return round(v, 1) if v is not None else None

    return {
        "count": n,
        "failures": int(raw.get("num_failures", 0)),
        "p50_ms": ms(0.5),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "avg_ms": round(raw["total_response_time"] / timed, 2) if timed else None,
        "max_ms": round(raw.get("max_response_time") or 0, 1) if n else None,
        "rps": round(n / seconds, 2) if seconds > 0 else 0.0,
    }


def read_failures(path: Path, limit: int = 20) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: -int(r.get("Occurrences") or 0))
    return [{"name": r.get("Name"), "error": r.get("Error"),
             "occurrences": int(r.get("Occurrences") or 0)} for r in rows[:limit]]


def read_counters(out: Path) -> Counter[str]:
    total: Counter[str] = Counter()
    for path in sorted(out.glob("counters-*.json")):
        try:
            total.update({k: int(v) for k, v in json.loads(path.read_text()).items()})
        except (OSError, ValueError):
            continue
    return total


def summarize(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary of a finished run (raises FileNotFoundError without Locust stats)."""
    entries = json.loads((out / "locust.json").read_text())
    starts = [e["start_time"] for e in entries if e.get("num_requests")]
    ends = [e["last_request_timestamp"] for e in entries if e.get("last_request_timestamp")]
    seconds = (max(ends) - min(starts)) if starts and ends else 0.0
    requests = {e["name"]: _entry(e, seconds) for e in entries}
    names = sorted(requests, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    requests = {n: requests[n] for n in names}
    count = sum(r["count"] for r in requests.values())
    failures = sum(r["failures"] for r in requests.values())
    counters = read_counters(out)
    order = requests.get("order", {}).get("count", 0)
    summary = {
        **meta,
        "measured_s": round(seconds, 2),
        "requests": requests,
        "totals": {"count": count, "failures": failures,
                   "rps": round(count / seconds, 2) if seconds > 0 else 0.0},
        "messages": {
            "sent": counters.get("sent", 0),
            "delivered": counters.get("delivered", 0),
            "delivered_live": counters.get("delivered_live", 0),
            "delivered_resumed": counters.get("delivered_resumed", 0),
            "fetched_by_sync": counters.get("fetched_new", 0),
            "duplicates": counters.get("duplicates", 0),
            "send_retries": counters.get("send_retries", 0),
        },
        "connections": {
            "connects": counters.get("connects", 0),
            "reconnects": counters.get("reconnects", 0),
            "lost": counters.get("connections_lost", 0),
            "storm_drops": counters.get("storm_drops", 0),
            "offline_periods": counters.get("offline_periods", 0),
            "churn_disconnects": counters.get("churn_disconnects", 0),
            "catch_ups": counters.get("catch_ups", 0),
        },
        "presence_changes": counters.get("presence_changes", 0),
        "receipts": counters.get("receipts", 0),
        "order_violations": order,
        "unverified_holes": counters.get("unverified_holes", 0),
        "failures": read_failures(out / "locust_failures.csv"),
    }
    summary["ok"] = failures == 0 and order == 0 and not meta.get("problem")
    return summary


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:g}" if v < 100 else f"{v:.0f}"


def render(summary: dict[str, Any], console: Console) -> None:
    prof = summary.get("profile", {})
    title = (f"load {prof.get('name', '?')} — {prof.get('users')} users, "
             f"{summary.get('measured_s', 0):g}s measured, {summary.get('workers')} "
             f"worker(s), {summary.get('ws_url')}")
    table = Table(title=title, title_justify="left")
    for col in ("request", "count", "failures", "p50 ms", "p95 ms", "p99 ms", "max ms",
                "req/s"):
        table.add_column(col, justify="left" if col == "request" else "right",
                         no_wrap=col == "request")
    for name, r in summary["requests"].items():
        fail = f"[bold red]{r['failures']}[/]" if r["failures"] else "0"
        table.add_row(name, str(r["count"]), fail, _fmt(r["p50_ms"]), _fmt(r["p95_ms"]),
                      _fmt(r["p99_ms"]), _fmt(r["max_ms"]), f"{r['rps']:.1f}")
    t = summary["totals"]
    table.add_row("[bold]total[/]", str(t["count"]),
                  f"[bold red]{t['failures']}[/]" if t["failures"] else "0", "", "", "", "",
                  f"{t['rps']:.1f}", end_section=True)
    console.print(table)
    m, c = summary["messages"], summary["connections"]
    console.print(f"messages: {m['sent']} sent, {m['delivered']} delivered "
                  f"({m['delivered_live']} live, {m['delivered_resumed']} on resume), "
                  f"{m['fetched_by_sync']} new by sync, {m['duplicates']} duplicates")
    extra = [f"{c['connects']} connects"]
    for key, label in (("reconnects", "reconnects"), ("lost", "lost"),
                       ("storm_drops", "storm drops"), ("offline_periods", "offline periods"),
                       ("churn_disconnects", "churn disconnects"), ("catch_ups", "catch-ups")):
        if c.get(key):
            extra.append(f"{c[key]} {label}")
    if summary.get("presence_changes"):
        extra.append(f"{summary['presence_changes']} presence changes")
    console.print("connections: " + ", ".join(extra))
    order = summary["order_violations"]
    console.print("order violations: " + (f"[bold red]{order}[/]" if order else "[green]0[/]"))
    for f in summary["failures"][:5]:
        console.print(f"[red]failure[/] {f['name']}: {f['error']} (x{f['occurrences']})",
                      highlight=False)
    if summary.get("problem"):
        console.print(f"[bold red]problem:[/] {summary['problem']}", highlight=False)
    verdict = "[green]ok[/]" if summary["ok"] else "[bold red]FAILED[/]"
    console.print(f"{verdict} — CSV and summary.json in {summary.get('out')}", highlight=False)
