"""`msgctl region failover|move|failback|status`: move conversations' homes between regions.

See docs/regions.md ("Failover"). The operations are in `msgctl.failover`; this
module parses, confirms and prints.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl import failover as ops
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home

region_app = typer.Typer(help="Move conversations' home regions: failover, move, failback.",
                         no_args_is_help=True)

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _print(outcome: ops.Outcome, json_out: bool, verb: str) -> None:
    if json_out:
        print(json.dumps(outcome.to_json()))
        return
    for m in outcome.moved:
        base = "after the old home's last message" if m["base"] is None else \
            f"after seq {m['base']}"
        console.print(f"{verb} {m['conv']}: {m['from']} -> {m['to']} (epoch {m['epoch']}, "
                      f"{base})", highlight=False)
    for s in outcome.skipped:
        err_console.print(f"[yellow]skipped[/] {s['conv']}: {s['reason']}", highlight=False)
    for note in outcome.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if not outcome.moved and not outcome.skipped:
        console.print("nothing to move")


def _progress(json_out: bool) -> Any:
    return (lambda _s: None) if json_out else (
        lambda s: err_console.print(f"[dim]{s}[/]", highlight=False))


@region_app.command("failover")
def failover_cmd(
    source: Annotated[str, typer.Argument(help="The region that is down or cut off.")],
    to: Annotated[str, typer.Option("--to", help="The region that takes its conversations.")],
    conversations: Annotated[list[str] | None, typer.Option(
        "--conversations", "-c",
        help="Conversation ids to move (repeatable), or 'all' (the default).")] = None,
    yes: YesOpt = False, home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Move conversations homed in SOURCE to --to now, from what --to holds."""
    h = get_home(home)
    convs = [c for c in (conversations or []) if c != "all"]
    if not yes:
        what = ", ".join(convs) if convs else f"every conversation homed in {source}"
        typer.confirm(f"Fail {what} over to {to}? Messages {source} acknowledged that {to} "
                      "does not hold are reconciled after the heal", abort=True)
    outcome = ops.run(lambda r: ops.failover(r, source, to, convs, _progress(json_out)), h)
    _print(outcome, json_out, "failed over")
    if convs and not outcome.moved:
        raise typer.Exit(1)


@region_app.command("move")
def move_cmd(
    conv: Annotated[str, typer.Argument(help="The conversation to move.")],
    to: Annotated[str, typer.Option("--to", help="Its new home region.")],
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Planned move of a live conversation: no message lost, no gap, no repeat."""
    h = get_home(home)
    outcome = ops.run(lambda r: ops.move(r, conv, to, progress=_progress(json_out)), h)
    _print(outcome, json_out, "moved")
    if not outcome.moved:
        raise typer.Exit(1)


@region_app.command("failback")
def failback_cmd(
    region: Annotated[str, typer.Argument(help="The region to give its conversations back.")],
    yes: YesOpt = False, home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """After the heal and reconciliation: move REGION's conversations back to it."""
    h = get_home(home)
    if not yes:
        typer.confirm(f"Move the conversations created in {region} back to it?", abort=True)
    outcome = ops.run(lambda r: ops.failback(r, region, _progress(json_out)), h)
    _print(outcome, json_out, "moved back")


@region_app.command("status")
def status_cmd(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Per region: conversations homed, moved in, reconciling, awaiting a fence."""
    h = get_home(home)
    rows = ops.run(ops.status, h)
    if json_out:
        print(json.dumps(rows))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("region", "homed", "moved in", "reconciling", "awaiting fence", "max epoch"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for r in rows:
        name = r["region"] if r["reachable"] else f"{r['region']} (store unreachable)"
        table.add_row(name, str(r["homed"]), str(r["moved_in"]), str(r["reconciling"]),
                      str(r["awaiting_fence"]), str(r["max_epoch"]))
    console.print(table)
