"""A drill's journal folder, its timeline picture, and the tables people read.

The folder holds ``drill.yaml`` (as run), ``history.jsonl`` (every operation),
``result.json`` (the checker's counts and witnesses, availability, convergence,
lag), ``probes.json`` (steady state before and after) and ``timeline.png``:
acknowledged sends per second per region above, replication lag per link
below, the fault windows shaded in both.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Group
from rich.table import Table

from chaos.check import ANOMALIES
from chaos.history import Record
from chaos.units import show_seconds


def write(out: Path, drill_raw: dict[str, Any], result: dict[str, Any],
          probes: dict[str, Any]) -> None:
    (out / "drill.yaml").write_text(yaml.safe_dump(drill_raw, sort_keys=False))
    (out / "result.json").write_text(json.dumps(result, indent=2))
    (out / "probes.json").write_text(json.dumps(probes, indent=2))


def windows(records: list[Record]) -> list[tuple[float, float, str]]:
    starts: dict[str, tuple[float, str]] = {}
    out: list[tuple[float, float, str]] = []
    end = max((r["t"] for r in records), default=0.0)
    for r in records:
        if r["kind"] != "nemesis":
            continue
        if r["type"] == "start":
            starts[r["id"]] = (r["t"], str(r.get("fault", "")))
        elif r["id"] in starts:
            t0, label = starts.pop(r["id"])
            out.append((t0, r["t"], label))
    out += [(t0, end, label) for t0, label in starts.values()]
    return out


def timeline(records: list[Record], path: Path, title: str) -> Path:
    """Draw the timeline PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acks: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    lag: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r["kind"] == "send" and r["type"] == "ok":
            acks[r["region"]][int(r["t"])] += 1
        elif r["kind"] == "lag" and r.get("lag_ms") is not None:
            lag[f"{r['source']} -> {r['target']}"].append((r["t"], r["lag_ms"] / 1000))
    end = int(max((r["t"] for r in records), default=1.0)) + 1
    panels = 2 if lag else 1
    fig, axes = plt.subplots(panels, 1, figsize=(11, 3.2 * panels), sharex=True, squeeze=False)
    ax = axes[0][0]
    for region, per_second in sorted(acks.items()):
        xs = list(range(end))
        ax.plot(xs, [per_second.get(x, 0) for x in xs], label=region, linewidth=1.2)
    ax.set_ylabel("acknowledged sends / s")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    if lag:
        ax2 = axes[1][0]
        for link, points in sorted(lag.items()):
            ax2.plot([p[0] for p in points], [p[1] for p in points], label=link, linewidth=1.2)
        ax2.set_ylabel("replication lag (s)")
        ax2.legend(loc="upper right", fontsize=8)
    for row in axes:
        for t0, t1, _ in windows(records):
            row[0].axvspan(t0, max(t1, t0 + 0.3), color="tab:red", alpha=0.15)
        row[0].grid(alpha=0.3)
    for t0, _, label in windows(records):
        axes[0][0].annotate(label, (t0, 1.0), xycoords=("data", "axes fraction"),
                            fontsize=7, va="top", rotation=90, color="tab:red")
    axes[-1][0].set_xlabel("seconds since the drill started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def summary(result: dict[str, Any]) -> Group:
    """The tables printed at the end of a drill."""
    counts = Table(title=f"drill {result['drill']} — "
                   + ("[bold green]valid[/]" if result["valid"] else "[bold red]NOT valid[/]"),
                   title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("check", "count", "first witness"):
        counts.add_column(col, overflow="fold", justify="right" if col == "count" else "left")
    for name in ANOMALIES:
        n = result["counts"].get(name, 0)
        witness = (result.get("witnesses") or {}).get(name, [])
        counts.add_row(name, f"[red]{n}[/]" if n else "0",
                       json.dumps(witness[0])[:90] if witness else "")
    sends = result["sends"]
    counts.add_row("acknowledged sends", str(sends["acknowledged"]), "")
    counts.add_row("recovered / indeterminate",
                   f"{sends['recovered']} / {sends['indeterminate']}", "")
    counts.add_row("deliveries", str(result["deliveries"]), "")
    avail = Table(title="availability (sends acknowledged within 1 s)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for col in ("region", "during faults, homed here", "homed elsewhere", "outside faults",
                "p50 / p99 outside"):
        avail.add_column(col, justify="left" if col == "region" else "right")
    for region, a in result["availability"].items():
        p50, p99 = a.get("outside_faults_p50_ms"), a.get("outside_faults_p99_ms")
        avail.add_row(region, _pct(a["during_faults_local"]), _pct(a["during_faults_remote"]),
                      _pct(a["outside_faults"]),
                      "-" if p50 is None else f"{p50} / {p99} ms")
    lags = ", ".join(f"{k} {v} ms" for k, v in result.get("peak_lag_ms", {}).items()) or "-"
    footer = Table.grid(padding=(0, 2))
    footer.add_row("converged in", show_seconds(result.get("converge_s")))
    footer.add_row("peak replication lag", lags)
    footer.add_row("steady state after", "ok" if result.get("steady_state_after") else
                   "[red]not met[/]")
    footer.add_row("journal", result.get("journal", ""))
    return Group(counts, avail, footer)
