"""`msgctl bench`: the performance suite against the running deployment."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from msgctl.bench import runner
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.errors import EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.supervisor import client
from msgctl.tls import trust_children

PARTS = ("idle", "throughput", "catch-up")


def _target(home: Any, region: str | None) -> runner.Target:
    if home.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {home.root} (run 'msgctl up')",
                          EXIT_NOT_RUNNING)
    deployment = home.deployment() or {}
    regions = deployment.get("regions", [])
    chosen = next((r for r in regions if region in (None, r["name"])), None)
    if chosen is None:
        names = ", ".join(r["name"] for r in regions)
        raise UsageError(f"no region '{region}' in this deployment (regions: {names})")
    state = client.read_state(home) or {}
    gateways = [p for p in state.get("programs", [])
                if p["region"] == chosen["name"] and "gateway" in p["runtimes"] and p["pid"]]
    if not gateways:
        raise MsgctlError(f"no running gateway in region {chosen['name']}")
    http = chosen.get("http_url") or f"http://{chosen['host']}:{chosen['gateway_port']}"
    trust_children(deployment)  # the client workers reach a TLS gateway
    return runner.Target(chosen["ws_url"], http, gateways[0]["pid"], home.secret())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _render(out: dict[str, Any]) -> None:
    table = Table(title="msgctl bench", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    idle = out.get("idle")
    if idle:
        table.add_row("idle connections held (of target)", f"{idle['held']:,} / "
                      f"{idle['target']:,}")
        table.add_row("RSS per idle connection (KiB)", _fmt(idle["rss_per_connection_kib"]))
        table.add_row("RSS before / after (MiB)", f"{idle['rss_before_mib']} / "
                      f"{idle['rss_after_mib']}")
    tp = out.get("throughput")
    if tp:
        table.add_row(f"max sustained msgs/s (p99 < {out['p99_limit_ms']:.0f} ms)",
                      _fmt(tp["max_msgs_per_s"]))
        if tp["at"]:
            table.add_row("  p50 / p99 send->deliver at max (ms)",
                          f"{_fmt(tp['at']['p50_ms'])} / {_fmt(tp['at']['p99_ms'])}")
    half = out.get("latency_at_half")
    if half:
        table.add_row(f"p50 / p99 send->deliver at {half['rate']:,.0f} msgs/s (ms)",
                      f"{_fmt(half['p50_ms'])} / {_fmt(half['p99_ms'])}")
        table.add_row(f"p50 / p99 send->sent at {half['rate']:,.0f} msgs/s (ms)",
                      f"{_fmt(half['sent_p50_ms'])} / {_fmt(half['sent_p99_ms'])}")
        table.add_row(f"benchmark clients' CPU at {half['rate']:,.0f} msgs/s (% of a core)",
                      _fmt(half["client_cpu_percent"]))
    cu = out.get("catch_up")
    if cu:
        table.add_row(f"catch-up of {cu['messages']:,} messages (msgs/s)",
                      _fmt(cu["per_second"]))
    relay = out.get("relay")
    if relay:
        table.add_row("bare websockets relay ceiling msgs/s", _fmt(relay["max_msgs_per_s"]))
        table.add_row("ratio to the ceiling", _fmt(out.get("ratio_to_relay")))
    console.print(table)
    if out.get("targets"):
        t = Table(title="targets (measured, not asserted)", title_justify="left")
        for col in ("target", "value", "met"):
            t.add_column(col)
        for row in out["targets"]:
            t.add_row(row["target"], _fmt(row["value"]),
                      "[green]yes[/]" if row["met"] else "[red]no[/]")
        console.print(t)
    if not out.get("pinned"):
        console.print("[yellow]not pinned: client and server shared CPUs[/]")


def bench(
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="A short run (seconds) for smoke "
                                        "tests; its figures are not the real ones.")] = False,
    only: Annotated[str, typer.Option(help=f"Comma-separated parts: {', '.join(PARTS)}.")]
    = ",".join(PARTS),
    connections: Annotated[int | None, typer.Option(
        help="Idle connections to open (default 18000, quick 500).")] = None,
    step_seconds: Annotated[float | None, typer.Option(
        help="Seconds measured per throughput step.")] = None,
    relay: Annotated[bool, typer.Option(help="Also measure the bare relay ceiling.")] = True,
    region: Annotated[str | None, typer.Option(help="Region whose gateway to measure.")]
    = None,
    save: Annotated[Path | None, typer.Option(
        help="Also write the JSON results to this file (e.g. a CI baseline).")] = None,
    ack_every: Annotated[int | None, typer.Option(
        help="Receivers ack every N messages (default 32; 1: every message, as a client "
             "showing delivery ticks does).")] = None,
) -> None:
    """Measure the running deployment: idle connections, throughput, latency, catch-up."""
    parts = {p.strip() for p in only.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown or not parts:
        raise UsageError(f"unknown part(s) {', '.join(sorted(unknown)) or '(none)'}; "
                         f"choose from {', '.join(PARTS)}")
    settings = runner.Settings.quick() if quick else runner.Settings()
    if connections is not None:
        if connections < 1:
            raise UsageError("--connections must be at least 1")
        settings.idle_connections = connections
    if step_seconds is not None:
        if step_seconds <= 0:
            raise UsageError("--step-seconds must be positive")
        settings.step_seconds = step_seconds
    settings.relay = relay
    if ack_every is not None:
        if ack_every < 1:
            raise UsageError("--ack-every must be at least 1")
        settings.ack_every = ack_every
    target = _target(get_home(home), region)
    status_console = err_console if json_out else console
    with status_console.status("benchmarking…") as status:
        try:
            out = runner.run_bench(target, settings, lambda text: status.update(text), parts)
        except MsgctlError:
            raise
        except Exception as exc:  # a worker's failure, e.g. the deployment went away
            raise MsgctlError(f"bench failed: {type(exc).__name__}: {exc}") from None
    text = json.dumps(out, indent=2, default=str)
    if save is not None:
        save.write_text(text + "\n")
    if json_out:
        print(text)
    else:
        _render(out)


def register(app: typer.Typer) -> None:
    app.command()(bench)
