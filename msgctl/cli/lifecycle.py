"""`msgctl up`, `down`, `status`, `restart`, `stop`, `start` and `kill`: the life of a
deployment.

The work is in `msgctl.deploy` (preparing a home, the supervisor, status data);
this module parses the arguments, shows progress and tables with Rich and picks
the exit codes. With `--json` each action verb prints one object of the shape
`msgctl.deploy.status.action_report` makes (README, "JSON output").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chaos.faults import FaultError, signal_number
from msgctl import topology as topo_mod
from msgctl.cli import engines as engines_cli
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.deploy import lifecycle as deploy
from msgctl.deploy.lifecycle import default_timeout
from msgctl.deploy.status import (
    action_report,
    current,
    faults_in_force,
    push_queue_depths,
    replication_links,
    report,
)
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home
from msgctl.supervisor import client
from msgctl.supervisor.daemon import (
    RUNNING,
    START_TIMEOUT,
    STOP_TIMEOUT,
    STOPPED,
    load_plan,
)
from msgctl.supervisor.program import ENGINE, engine_dependents, match, restart_wait

# `msgctl infra` shares these: the options, and the steps with their terminal output
__all__ = ["OffsetOpt", "TopologyOpt", "down", "print_json", "prepare", "print_status",
           "register", "restart", "start_supervisor", "status", "stop_deployment", "up"]

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
        help="Seconds to wait for readiness (default 120, plus the engines' start deadline "
             "and their longest warm-up).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a deployment and return when every runtime (and engine) is ready."""
    if foreground and json_out:
        raise UsageError("--json reports a started deployment; it does not go with "
                         "--foreground")
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
        if json_out:
            print_json(action_report(h, "up", True, [], already_up=True, took_s=0.0,
                                     regions=running.get("regions", [])))
            return
        console.print(f"already up under {h.root}")
        print_status(h)
        return
    programs = prepare(h, topology, port_offset)
    if foreground:
        _run_foreground(h)
        return
    took = start_supervisor(h, timeout if timeout is not None else default_timeout(programs),
                            show=not json_out)
    if json_out:
        print_json(action_report(h, "up", True, [p.name for p in programs], already_up=False,
                                 took_s=round(took, 1),
                                 regions=(h.deployment() or {}).get("regions", [])))
        return
    console.print("next: [bold]msgctl token alice phone[/] for a JWT, then connect a "
                  "WebSocket client to the gateway URL above")


def print_json(data: dict[str, Any]) -> None:
    """One JSON object on stdout (``--json``)."""
    print(json.dumps(data, indent=2))


def start_supervisor(h: Home, timeout: float, show: bool = True) -> float:
    """Launch the supervisor of a prepared home and return once every program is RUNNING
    (the seconds it took); `show`: the outcome and the status table on the terminal."""
    with console.status("starting…") as spinner:
        took = deploy.start_supervisor(h, timeout, on_state=lambda programs: spinner.update(
            " ".join(f"{p['name']}: {_progress(p)}" for p in programs)))
    if show:
        console.print(f"[green]up[/] in {took:.1f}s under {h.root}")
        warmed = warmups(h)
        if warmed:
            console.print(warmed)
        print_status(h)
    return took


def _progress(program: dict[str, Any]) -> str:
    if deploy.warming(program):
        return "warming up"
    return str(program["state"]).lower()


def warmups(h: Home) -> str:
    """One line on the engines' warm-ups of the last start ("" when none ran)."""
    parts = []
    for p in (client.read_state(h) or {}).get("programs", []):
        w = p.get("warmup") or {}
        if w.get("state") == "done":
            how = "its JIT settled" if w.get("jit_settled") else "the time limit"
            parts.append(f"{p['name']} {w.get('seconds', 0):.0f}s ({how})")
        elif w.get("state") == "failed":
            parts.append(f"{p['name']} failed after {w.get('seconds', 0):.0f}s: "
                         f"{w.get('error', '')}")
        elif w.get("state") == "warming":
            parts.append(f"{p['name']} still warming up (past --timeout)")
        elif w.get("state") == "interrupted":
            parts.append(f"{p['name']} interrupted after {w.get('seconds', 0):.0f}s "
                         "(the engine exited)")
    return "warmed up: " + ", ".join(parts) if parts else ""


def _run_foreground(h: Home) -> None:
    console.print(f"running in the foreground under {h.root}; Ctrl-C stops it")
    deploy.run_foreground(h)
    console.print("stopped")


def down(
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before stragglers are killed.")] = 150.0,
    json_out: JsonOpt = False,
) -> None:
    """Stop the deployment gracefully, dependents first."""
    stop_deployment(get_home(home), timeout, json_out, "down")


def stop_deployment(h: Home, timeout: float, json_out: bool, verb: str) -> None:
    """`down` and `infra stop`: stop the supervisor of `h` (nothing running is no error)."""
    pid = h.supervisor_pid()
    if pid is None:
        if json_out:
            print_json(action_report(h, verb, True, [], was_running=False, killed=False))
        else:
            console.print(f"nothing is running under {h.root}")
        return
    before = [p["name"] for p in (client.read_state(h) or {}).get("programs", [])
              if p["state"] != STOPPED]
    with console.status("stopping…"):
        stopped = deploy.stop_supervisor(h, pid, timeout)
    if not stopped:
        # the supervisor hung: kill it and every program group it left
        deploy.kill_deployment(h, pid)
        err_console.print(f"[yellow]the supervisor did not stop in {timeout:.0f}s; killed[/]")
    if json_out:
        print_json(action_report(h, verb, True, before, was_running=True,
                                 killed=not stopped))
    else:
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
            "FATAL": "bold red", "STOPPED": "dim", "UNHEALTHY": "red",
            "OFFLINE": "bold red", "UNKNOWN": "yellow"}


def print_status(h: Home) -> bool:
    """The status tables and notes of `h` on the terminal; whether the supervisor runs."""
    view, running = status_view(h)
    console.print(view)
    return running


def status_view(h: Home) -> tuple[Group, bool]:
    """What `msgctl status` shows, as one renderable (`--watch` redraws it in place)."""
    parts: list[RenderableType] = []
    rows, running, _ = current(h)
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
        parts.append(table)
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
        parts.append(lag_table)
    if running and deployment.get("scope") != "engines":
        depths = push_queue_depths(deployment)
        if depths:
            parts.append(Text("push queue: " + ", ".join(
                f"{region} {'?' if d is None else d}" for region, d in depths.items())))
    for r in rows:
        if r["message"] and (r["runtime"].startswith("gateway") or r["kind"] in (ENGINE,
                                                                                  "agent")):
            parts.append(Text.from_markup(f"[yellow]{escape(r['program'])}[/]: "
                                          f"{escape(r['message'])}"))
    faults = faults_in_force(h)
    if faults:
        parts.append(Text.from_markup("[bold red]faults in force[/]: " + escape("; ".join(
            f"{f['id']} {f['description']}" for f in faults) + " ('msgctl chaos heal')")))
    return Group(*parts), running


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms" if value < 10_000 else f"{value / 1000:.0f} s"


def status(
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Redraw the table in place every --interval until Ctrl-C.")]
    = False,
    interval: Annotated[float, typer.Option(
        "--interval", "-i", help="Seconds between refreshes with --watch.")] = 2.0,
    count: Annotated[int | None, typer.Option(
        "--count", "-c", help="With --watch: stop after this many refreshes.",
        show_default=False)] = None,
) -> None:
    """Show every runtime of every region: state, pid, uptime, restarts, endpoint."""
    if not interval > 0 or interval > 86400:  # also NaN
        raise UsageError(f"--interval must be more than 0 and at most 86400 seconds, "
                         f"not {interval}")
    if count is not None and count < 1:
        raise UsageError(f"--count must be at least 1, not {count}")
    h = get_home(home)
    if watch or count is not None:
        _watch(h, json_out, interval, count)
        return
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


def _watch(h: Home, json_out: bool, interval: float, count: int | None) -> None:
    """`status --watch`: on a terminal the table redrawn in place (Rich Live); otherwise, and
    with --json (a report per line), one after the other. Ctrl-C ends it with exit 0; a
    --count run ends with status's own code (3: the supervisor is not running)."""
    if not h.deployment():
        raise MsgctlError(f"no deployment under {h.root} (run 'msgctl up')", EXIT_NOT_RUNNING)
    shown = 0
    running = True
    live = Live(console=console, auto_refresh=False, transient=False) if (
        console.is_terminal and not json_out) else None
    try:
        if live is not None:
            live.start()
        while count is None or shown < count:
            if shown:
                time.sleep(interval)
            if json_out:
                report_now = report(h)
                running = report_now["running"]
                print(json.dumps(report_now), flush=True)
            else:
                view, running = status_view(h)
                stamp = Text(f"{time.strftime('%H:%M:%S')} every {interval:g}s"
                             + ("" if running else " (not running)"), style="dim")
                if live is not None:
                    live.update(Group(view, stamp), refresh=True)
                else:
                    console.print(Group(view, stamp))
            shown += 1
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends
    finally:
        if live is not None:
            live.stop()
    if not running:
        raise typer.Exit(EXIT_NOT_RUNNING)


def restart(
    target: Annotated[str | None, typer.Argument(
        help="Glob on runtimes or programs, e.g. 'gateway*' (none: everything, after asking)."
    )] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Restart everything without "
                                      "asking (no glob given).")] = False,
    with_dependents: Annotated[bool, typer.Option(
        "--with-dependents", "-d", help="Restarting an engine: restart the runtimes of its "
                                        "region that depend on it too.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restart the processes hosting the matching runtimes (dependents stop first). The
    runtimes that depend on a restarted engine are listed (and restarted too with
    --with-dependents)."""
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
    if h.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {h.root}", EXIT_NOT_RUNNING)
    wait = _restart_wait(h, target, with_dependents)
    with console.status(f"restarting {target}…"):
        reply = client.command(h, "restart", timeout=wait, glob=target,
                               dependents=with_dependents)
    dependents = reply.get("dependents", [])
    if dependents and not json_out:
        if with_dependents:
            console.print(f"restarted with the engine, as they depend on it: "
                          f"{', '.join(dependents)}")
        else:
            console.print(f"left running, they depend on the restarted engine and reconnect "
                          f"to it: {', '.join(dependents)} (--with-dependents restarts them "
                          "too)")
    _report(h, reply, reply["restarted"], "restart", RUNNING, json_out,
            dependents=dependents, dependents_restarted=with_dependents and bool(dependents))


def _restart_wait(h: Home, target: str, with_dependents: bool) -> float:
    """How long a restart of `target` may take: the programs' own stop and readiness
    timeouts (an engine's 180 s included), one after the other."""
    try:
        programs = load_plan(h)
    except (OSError, ValueError, KeyError, TypeError):
        return 120.0  # the supervisor answers for what it runs
    names = match(programs, target)
    if with_dependents:
        names += engine_dependents(programs, names)
    return restart_wait(programs, names, START_TIMEOUT, STOP_TIMEOUT)


_DONE = {"restart": "restarted", "stop": "stopped", "start": "started", "kill": "killed"}


def _report(h: Home, reply: dict[str, Any], names: list[str], verb: str, wanted: str,
            json_out: bool, **extra: Any) -> None:
    """A line per program the supervisor acted on, with the state it reached (or the
    verb's JSON answer); exit 1 (after every line) when one did not reach `wanted`."""
    programs = {p["name"]: p for p in reply["programs"]}
    failed = [n for n in names if programs[n]["state"] != wanted]
    if json_out:
        print_json(action_report(h, verb, not failed, names, reply["programs"], **extra))
    else:
        for name in names:
            p = programs[name]
            hosted = ", ".join(f"{r}.{p['region']}" for r in p["runtimes"])
            colour = "red" if name in failed else "green"
            console.print(f"{_DONE[verb]} {name} (hosts {hosted}): [{colour}]{p['state']}[/]")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _stop_or_start(op: str, target: str, home: Home, json_out: bool) -> None:
    if home.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {home.root}", EXIT_NOT_RUNNING)
    try:
        programs = load_plan(home)
        names = match(programs, target)
        wait = restart_wait(programs, names, START_TIMEOUT if op == "start" else 0.0,
                            STOP_TIMEOUT if op == "stop" else 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        wait = 120.0
    with console.status(f"{'stopping' if op == 'stop' else 'starting'} {target}…"):
        reply = client.command(home, op, timeout=wait, glob=target)
    if not reply["changed"] and not json_out:
        console.print(f"nothing to {op}: every match is already "
                      f"{'stopped' if op == 'stop' else 'running'}")
    _report(home, reply, reply["changed"], op, STOPPED if op == "stop" else RUNNING, json_out)


def stop(
    target: Annotated[str, typer.Argument(help="Glob on runtimes or programs, e.g. "
                                          "'kafka*' or 'push.local'.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop the matching programs and keep them down (no restart) until 'msgctl start'."""
    _stop_or_start("stop", target, get_home(home), json_out)


def start(
    target: Annotated[str, typer.Argument(help="Glob on runtimes or programs.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start the matching programs that were stopped (or gave up, FATAL)."""
    _stop_or_start("start", target, get_home(home), json_out)


def kill(
    target: Annotated[str, typer.Argument(help="Glob on runtimes or programs, e.g. "
                                          "'sequencer*' or 'kafka.local'.")],
    signal_name: Annotated[str, typer.Option(
        "--signal", "-s", help="KILL (a crash), TERM, INT, HUP, USR1, ... or a number.")]
    = "KILL",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Signal the matching programs' process groups; the supervisor restarts them as after
    a crash (unlike 'msgctl stop', which keeps them down)."""
    try:
        signal_number(signal_name)  # before anything touches the home
    except FaultError as exc:
        raise UsageError(str(exc)) from None
    h = get_home(home)
    if h.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {h.root}", EXIT_NOT_RUNNING)
    reply = client.command(h, "kill", timeout=30, glob=target, signal=signal_name)
    signalled = reply["signalled"]
    if json_out:
        print_json(action_report(h, "kill", True, [k["name"] for k in signalled],
                                 reply["programs"], signal=reply["signal"],
                                 pids={k["name"]: k["pid"] for k in signalled}))
        return
    states = {p["name"]: p["state"] for p in reply["programs"]}
    if not signalled:
        console.print("nothing to kill: no match is running (" + ", ".join(
            f"{n} {states[n]}" for n in reply["matched"]) + ")")
    for k in signalled:
        console.print(f"killed {k['name']} (pid {k['pid']}) with SIG{reply['signal']}; the "
                      "supervisor restarts it")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(restart)
    app.command()(stop)
    app.command()(start)
    app.command()(kill)

