"""`msgctl drill`: run a bundled or custom drill against the running deployment.

A drill checks the steady state, runs traffic, applies its faults on schedule,
heals, waits for convergence, reads every region and checks the history
(chaos/check.py). The exit code says whether the history was valid.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from chaos import drill as drill_mod
from chaos.units import show_seconds
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.errors import EXIT_FAILED, MsgctlError, UsageError

drill_app = typer.Typer(help="Run drills: traffic, faults on a schedule, heal, converge, and a "
                             "check of every acknowledged message.", no_args_is_help=True)


@drill_app.command("list")
def list_drills(json_out: JsonOpt = False) -> None:
    """The bundled drills, one line each."""
    rows = []
    for name, path in drill_mod.bundled().items():
        d = drill_mod.load(str(path))
        text = " ".join(d.description.split())
        rows.append({"name": name, "regions": d.needs_regions, "backend": d.needs_backend,
                     "summary": text.split(". ")[0].split("; ")[0].rstrip("."),
                     "description": text})
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("drill", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    table.add_column("needs", no_wrap=True, min_width=20)
    table.add_column("what it does", no_wrap=True, overflow="ellipsis")
    for r in rows:
        needs = f"{r['regions']} region{'s' if r['regions'] > 1 else ''}"
        if r["backend"] != "any":
            needs += f", {r['backend']}"
        table.add_row(f"[bold]{r['name']}[/]", needs, r["summary"])
    console.print(table)


def _needs(d: drill_mod.Drill, target: Any) -> None:
    """One line and exit 2 when the deployment cannot run the drill."""
    n = len(target.regions)
    if n < d.needs_regions:
        raise UsageError(f"drill {d.name} needs {d.needs_regions} regions and "
                         f"{target.name} has {n} (e.g. 'msgctl up -t regions/two-region.yaml')")
    if d.needs_backend != "any" and target.backend != d.needs_backend:
        raise UsageError(f"drill {d.name} needs the {d.needs_backend} backend; {target.name} "
                         f"runs {target.backend}")
    if d.needs_network or d.needs_link_proxy:
        support = target.chaos_support()
        if d.needs_network and support["network"] != "on":
            raise MsgctlError(f"drill {d.name} needs network faults, which are "
                              f"{support['network']}")
        if d.needs_link_proxy and support["link_proxy"] != "on":
            raise MsgctlError(f"drill {d.name} needs the link proxy, which is "
                              f"{support['link_proxy']}")


def _view(d: drill_mod.Drill, regions: list[str]):  # type: ignore[no-untyped-def]
    def render(p: Any) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_row("[bold]drill[/]", f"{d.name} — {p.phase}",
                      show_seconds(time.monotonic() - p.started))
        for region in regions:
            table.add_row(f"  {region}", f"{p.ack_rate(region):.0f} acks/s", "")
        table.add_row("  pending sends", str(p.pending), f"deliveries {p.deliveries}")
        if p.lag:
            table.add_row("  lag", ", ".join(f"{k} {'?' if v is None else v} ms"
                                             for k, v in p.lag.items()), "")
        table.add_row("  faults in force", ", ".join(p.faults.values()) or "none", "")
        if p.note:
            table.add_row("  waiting for", p.note[:70], "")
        return table
    return render


@drill_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="A bundled drill (msgctl drill list) or a path "
                                             "to a drill YAML.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Journal folder (default <home>/drills/<name>-<time>).",
        file_okay=False)] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed for the traffic and the fault selectors (printed; rerun with it).")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a drill and check its history; exit 1 when it is not valid."""
    # the runner pulls in aiohttp, websockets and the checker: only when a drill runs
    from chaos import journal
    from chaos.runner import DrillAborted, Progress, Runner
    from chaos.target import Target

    try:
        d = drill_mod.load(name)
    except drill_mod.DrillError as exc:
        for problem in exc.problems[:-1]:
            err_console.print(f"[red]msgctl:[/] {problem}", highlight=False)
        raise UsageError(exc.problems[-1]) from None
    h = get_home(home)
    target = Target.of(h)
    _needs(d, target)
    try:
        d = d.resolve(target.names)
    except drill_mod.DrillError as exc:
        raise UsageError(exc.problems[0]) from None
    seed = seed if seed is not None else secrets.randbelow(1 << 31)
    folder = out or h.root / "drills" / f"{d.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    live = not json_out and console.is_terminal
    render = _view(d, target.names)
    display = Live(render(Progress()), console=console, refresh_per_second=2,
                   transient=True) if live else None
    if not json_out:
        console.print(f"drill [bold]{d.name}[/] on {target.name} (seed {seed}), journal "
                      f"{folder}", highlight=False)

    def update(p: Progress) -> None:
        if display is not None:
            display.update(render(p))

    runner = Runner(d, target, folder, seed, on_change=update)
    try:
        if display is not None:
            with display:
                outcome = asyncio.run(runner.run())
        else:
            outcome = asyncio.run(runner.run())
    except DrillAborted as exc:
        raise MsgctlError(f"drill {d.name} stopped: {exc}") from None
    result = outcome["result"]
    journal.write(folder, d.raw, result, outcome["probes"])
    try:
        journal.timeline(runner.history.records, folder / "timeline.png",
                         f"{d.name} on {target.name} (seed {seed})")
    except Exception as exc:  # the picture is a convenience; the result stands without it
        err_console.print(f"[yellow]no timeline picture: {exc}[/]")
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        console.print(journal.summary(result))
    if not result["ok"]:
        raise typer.Exit(EXIT_FAILED)
