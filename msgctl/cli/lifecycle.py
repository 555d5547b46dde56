"""`msgctl up`, `down`, `status` and `restart`: the life of a deployment.

The work is in `msgctl.deploy` (preparing a home, the supervisor, status data);
this module parses the arguments, shows progress and tables with Rich and picks
the exit codes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl import topology as topo_mod
from msgctl.cli import engines as engines_cli
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.deploy import lifecycle as deploy
from msgctl.deploy.lifecycle import default_timeout
from msgctl.deploy.status import (
    faults_in_force,
    push_queue_depths,
    replication_links,
    report,
    runtime_rows,
)
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home
from msgctl.supervisor import client
from msgctl.supervisor.daemon import RUNNING, STOPPED
from msgctl.supervisor.program import ENGINE

# `msgctl infra` shares these: the options, and the steps with their terminal output
__all__ = ["OffsetOpt", "TopologyOpt", "down", "prepare", "print_status", "register", "restart",
           "start_supervisor", "status", "up"]

TopologyOpt = Annotated[str, typer.Option(
    "--topology", "-t", help="Topology file (relative to the project if not found here).")]
OffsetOpt = Annotated[int, typer.Option(
    "--port-offset", help="Add this to every port of the topology (side-by-side deployments).")]


def _hooks() -> deploy.Hooks:
    """Progress of the library's steps, on the terminal."""
    def warn(level: str, text: str) -> None:
        err_console.print(f"[yellow]{level}[/]: {text}")

    return deploy.Hooks(
        warn=warn, step=console.status,
        ensure_engines=lambda topo: engines_cli.ensure(engines_cli.wanted(topo)))


def prepare(home: Home, topology: str, port_offset: int,
             engines_only: bool = False) -> list[topo_mod.Program]:
    return deploy.prepare(home, topology, port_offset, engines_only, _hooks())


def up(
    topology: TopologyOpt = topo_mod.DEFAULT_TOPOLOGY,
    home: HomeOpt = None,
    port_offset: OffsetOpt = 0,
    foreground: Annotated[bool, typer.Option(
        "--foreground", "-f", help="Stay attached; Ctrl-C stops the deployment.")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="Seconds to wait for readiness (default 120, plus the engines' start deadline).",
        show_default=False)] = None,
) -> None:
    """Start a deployment and return when every runtime (and engine) is ready."""
    h = get_home(home)
    if h.supervisor_pid() is not None:
        if (h.deployment() or {}).get("scope") == "engines":
            raise UsageError(f"only the engines run under {h.root} ('msgctl infra start'); "
                             "stop them with 'msgctl infra stop' first, then 'msgctl up'")
        running = h.deployment() or {}
        wanted = topo_mod.resolve_path(topology)
        source = Path(str(running.get("source", ""))).resolve()
        offset = int(running.get("port_offset", 0) or 0)
        if running.get("source") and (wanted != source or offset != port_offset):
            raise UsageError(f"{h.root} runs {source} (port offset {offset}); 'msgctl down' "
                             f"it before 'up' with {wanted} (port offset {port_offset}), or "
                             "use another --home")
        console.print(f"already up under {h.root}")
        print_status(h)
        return
    programs = prepare(h, topology, port_offset)
    if foreground:
        _run_foreground(h)
        return
    start_supervisor(h, timeout if timeout is not None else default_timeout(programs))
    console.print("next: [bold]msgctl token alice phone[/] for a JWT, then connect a "
                  "WebSocket client to the gateway URL above")


def start_supervisor(h: Home, timeout: float) -> None:
    """Launch the supervisor of a prepared home and return once every program is RUNNING."""
    with console.status("starting…") as spinner:
        took = deploy.start_supervisor(h, timeout, on_state=lambda programs: spinner.update(
            " ".join(f"{p['name']}: {p['state'].lower()}" for p in programs)))
    console.print(f"[green]up[/] in {took:.1f}s under {h.root}")
    print_status(h)


def _run_foreground(h: Home) -> None:
    console.print(f"running in the foreground under {h.root}; Ctrl-C stops it")
    deploy.run_foreground(h)
    console.print("stopped")


def down(
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before stragglers are killed.")] = 150.0,
) -> None:
    """Stop the deployment gracefully, dependents first."""
    h = get_home(home)
    pid = h.supervisor_pid()
    if pid is None:
        console.print(f"nothing is running under {h.root}")
        return
    with console.status("stopping…"):
        stopped = deploy.stop_supervisor(h, pid, timeout)
    if not stopped:
        # the supervisor hung: kill it and every program group it left
        deploy.kill_deployment(h, pid)
        err_console.print(f"[yellow]the supervisor did not stop in {timeout:.0f}s; killed[/]")
    console.print(f"[green]down[/] ({h.root})")


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


_COLOURS = {"RUNNING": "green", "STARTING": "yellow", "BACKOFF": "yellow", "STOPPING": "yellow",
            "FATAL": "bold red", "STOPPED": "dim", "UNHEALTHY": "red"}


def print_status(h: Home) -> bool:
    running = h.supervisor_pid() is not None
    rows = runtime_rows(client.read_state(h), running)
    deployment = h.deployment() or {}
    # fits 80 columns: nothing folds (a URL cut in two cannot be copied), the runtime
    # column does not repeat the region's name, the table has no outer padding
    table = Table(title=f"{deployment.get('name', 'msgctl')} — {h.root}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col, head in (("region", "region"), ("runtime", "runtime"), ("state", "state"),
                      ("pid", "pid"), ("uptime", "up"), ("restarts", "restarts"),
                      ("endpoint", "endpoint")):
        table.add_column(head, justify="right" if col in ("pid", "restarts") else "left",
                         no_wrap=True, overflow="ellipsis" if col != "endpoint" else "crop")
    for r in rows:
        colour = _COLOURS.get(r["state"], "white")
        table.add_row(r["region"], r["runtime"].removesuffix(f".{r['region']}"),
                      f"[{colour}]{r['state']}[/]", str(r["pid"] or "-"),
                      _uptime(r["uptime_s"]), str(r["restarts"]), r["endpoint"] or "-")
    if rows:
        console.print(table)
    links = replication_links(deployment) if running else []
    if links:
        lag_table = Table(title="replication (MirrorMaker 2)", title_justify="left",
                          box=box.SIMPLE_HEAD)
        for col in ("link", "lag", "heartbeat age", "state"):
            lag_table.add_column(col, justify="right" if col != "link" else "left")
        for link in links:
            state = ("[bold red]STALLED[/]" + (f" {link.error}" if link.error else "")
                     if link.stalled else "[green]ok[/]")
            lag_table.add_row(f"{link.source} -> {link.target}", _ms(link.lag_ms),
                              _ms(link.heartbeat_age_ms), state)
        console.print(lag_table)
    if running and deployment.get("scope") != "engines":
        depths = push_queue_depths(deployment)
        if depths:
            console.print("push queue: " + ", ".join(
                f"{region} {'?' if d is None else d}" for region, d in depths.items()))
    for r in rows:
        if r["message"] and (r["runtime"].startswith("gateway") or r["kind"] == ENGINE):
            console.print(f"[yellow]{r['program']}[/]: {r['message']}")
    faults = faults_in_force(h)
    if faults:
        console.print("[bold red]faults in force[/]: " + "; ".join(
            f"{f['id']} {f['description']}" for f in faults) + " ('msgctl chaos heal')",
            highlight=False)
    return running


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms" if value < 10_000 else f"{value / 1000:.0f} s"


def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show every runtime of every region: state, pid, uptime, restarts, endpoint."""
    h = get_home(home)
    running = h.supervisor_pid() is not None
    if json_out:
        out = report(h)
        print(json.dumps(out, indent=2))
    elif not h.deployment():
        console.print(f"no deployment under {h.root} (run 'msgctl up')")
    else:
        print_status(h)
        if not running:
            console.print(f"[dim]not running (run 'msgctl up --home {h.root}')[/]")
    if not running:
        raise typer.Exit(EXIT_NOT_RUNNING)


def restart(
    target: Annotated[str | None, typer.Argument(
        help="Glob on runtimes or programs, e.g. 'gateway*' (none: everything, after asking)."
    )] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Restart everything without "
                                      "asking (no glob given).")] = False,
    home: HomeOpt = None,
) -> None:
    """Restart the processes hosting the matching runtimes (dependents stop first)."""
    h = get_home(home)
    if target is None:
        if h.supervisor_pid() is None:
            raise MsgctlError(f"nothing is running under {h.root}", EXIT_NOT_RUNNING)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("no glob: that restarts every program of the deployment; "
                                 "pass --yes, or a glob such as 'gateway*'")
            if not typer.confirm(f"Restart every program under {h.root}?", default=False):
                raise typer.Exit(EXIT_FAILED)
        target = "*"
    with console.status(f"restarting {target}…"):
        reply = client.command(h, "restart", glob=target)
    _report(reply, reply["restarted"], "restarted", RUNNING)


def _report(reply: dict[str, Any], names: list[str], verb: str, wanted: str) -> None:
    """A line per program the supervisor acted on, with the state it reached; exit 1
    (after every line) when one did not reach `wanted`."""
    programs = {p["name"]: p for p in reply["programs"]}
    failed = False
    for name in names:
        p = programs[name]
        hosted = ", ".join(f"{r}.{p['region']}" for r in p["runtimes"])
        ok = p["state"] == wanted
        failed |= not ok
        colour = "green" if ok else "red"
        console.print(f"{verb} {name} (hosts {hosted}): [{colour}]{p['state']}[/]")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _stop_or_start(op: str, target: str, home: Home) -> None:
    if home.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {home.root}", EXIT_NOT_RUNNING)
    with console.status(f"{'stopping' if op == 'stop' else 'starting'} {target}…"):
        reply = client.command(home, op, glob=target)
    if not reply["changed"]:
        console.print(f"nothing to {op}: every match is already "
                      f"{'stopped' if op == 'stop' else 'running'}")
    if op == "stop":
        _report(reply, reply["changed"], "stopped", STOPPED)
    else:
        _report(reply, reply["changed"], "started", RUNNING)


def stop(
    target: Annotated[str, typer.Argument(help="Glob on runtimes or programs, e.g. "
                                          "'kafka*' or 'push.local'.")],
    home: HomeOpt = None,
) -> None:
    """Stop the matching programs and keep them down (no restart) until 'msgctl start'."""
    _stop_or_start("stop", target, get_home(home))


def start(
    target: Annotated[str, typer.Argument(help="Glob on runtimes or programs.")],
    home: HomeOpt = None,
) -> None:
    """Start the matching programs that were stopped (or gave up, FATAL)."""
    _stop_or_start("start", target, get_home(home))


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(restart)
    app.command()(stop)
    app.command()(start)

