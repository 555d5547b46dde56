"""`msgctl up`, `down`, `status` and `restart`: the life of a deployment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl import topology as topo_mod
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home, write_json_atomic
from msgctl.supervisor import client
from msgctl.supervisor.daemon import FATAL, RUNNING, Supervisor

TopologyOpt = Annotated[str, typer.Option(
    "--topology", "-t", help="Topology file (relative to the project if not found here).")]
OffsetOpt = Annotated[int, typer.Option(
    "--port-offset", help="Add this to every port of the topology (side-by-side deployments).")]


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the server binds: connections in TIME_WAIT from a previous run do not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"port {port} on {host} is in use ({exc.strerror}); stop what "
                             "holds it, or choose other ports with --port-offset") from None


def _prepare(home: Home, topology: str, port_offset: int) -> list[topo_mod.Program]:
    topo = topo_mod.load(topology, port_offset)
    for region in topo.regions:
        _check_port_free(region.host, region.gateway_port)
    home.ensure()
    programs = topo_mod.plan(topo, sys.executable, home.config, home.dirs, home.secret())
    write_json_atomic(home.plan_file, {"programs": [p.to_dict() for p in programs]})
    deployment = json.loads(topo_mod.to_json(topo))
    deployment.update(home=str(home.root), port_offset=port_offset, created=time.time())
    write_json_atomic(home.deployment_file, deployment)
    home.state_file.unlink(missing_ok=True)
    return programs


def _wait_up(home: Home, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with console.status("starting…") as spinner:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise MsgctlError(f"the supervisor exited ({proc.returncode}); see "
                                  f"{home.logs / 'supervisor.log'}")
            state = client.read_state(home)
            if state:
                programs = state["programs"]
                spinner.update(" ".join(f"{p['name']}: {p['state'].lower()}" for p in programs))
                fatal = [p for p in programs if p["state"] == FATAL]
                if fatal:
                    p = fatal[0]
                    raise MsgctlError(f"{p['name']} failed to start: {p['message']}; see "
                                      f"'msgctl logs {p['name']}'")
                if programs and all(p["state"] == RUNNING for p in programs):
                    return state
            time.sleep(0.1)
    raise MsgctlError(f"not ready after {timeout:.0f}s; see 'msgctl logs' and 'msgctl status'")


def up(
    topology: TopologyOpt = topo_mod.DEFAULT_TOPOLOGY,
    home: HomeOpt = None,
    port_offset: OffsetOpt = 0,
    foreground: Annotated[bool, typer.Option(
        "--foreground", "-f", help="Stay attached; Ctrl-C stops the deployment.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
) -> None:
    """Start a deployment and return when every runtime is ready."""
    h = get_home(home)
    if h.supervisor_pid() is not None:
        console.print(f"already up under {h.root}")
        _print_status(h)
        return
    _prepare(h, topology, port_offset)
    if foreground:
        _run_foreground(h)
        return
    with (h.logs / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "msgctl.supervisor.daemon", "--home", str(h.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(h.root))
    t0 = time.monotonic()
    try:
        _wait_up(h, proc, timeout)
    except MsgctlError:
        _stop_supervisor(h, proc.pid, timeout=30)
        raise
    console.print(f"[green]up[/] in {time.monotonic() - t0:.1f}s under {h.root}")
    _print_status(h)
    console.print("next: [bold]msgctl token alice phone[/] for a JWT, then connect a "
                  "WebSocket client to the gateway URL above")


def _run_foreground(h: Home) -> None:
    from msgctl.supervisor.daemon import load_plan

    console.print(f"running in the foreground under {h.root}; Ctrl-C stops it")
    sup = Supervisor(h, load_plan(h))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(sup.run())
    console.print("stopped")


def _stop_supervisor(h: Home, pid: int, timeout: float) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (up's failure path)
        if h.supervisor_pid() is None or not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before stragglers are killed.")] = 60.0,
) -> None:
    """Stop the deployment gracefully, dependents first."""
    h = get_home(home)
    pid = h.supervisor_pid()
    if pid is None:
        console.print(f"nothing is running under {h.root}")
        return
    with console.status("stopping…"):
        stopped = _stop_supervisor(h, pid, timeout)
    if not stopped:
        # the supervisor hung: kill it and every program group it left
        os.kill(pid, signal.SIGKILL)
        for p in (client.read_state(h) or {}).get("programs", []):
            if p.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p["pid"], signal.SIGKILL)
        h.pid_file.unlink(missing_ok=True)
        err_console.print(f"[yellow]the supervisor did not stop in {timeout:.0f}s; killed[/]")
    console.print(f"[green]down[/] ({h.root})")


def _rows(h: Home, state: dict[str, Any] | None, running: bool) -> list[dict[str, Any]]:
    rows = []
    now = time.time()
    for p in (state or {}).get("programs", []):
        for runtime, rstate in p["runtimes"].items():
            # FATAL outlives the supervisor: `up` gave up on it, and that is the news
            pstate = p["state"] if running or p["state"] == FATAL else "STOPPED"
            shown = pstate
            if pstate == RUNNING and rstate not in ("ready", "-"):
                shown = rstate.upper()
            up_for = now - p["started_at"] if running and p["started_at"] and pstate in (
                RUNNING,) else None
            rows.append({
                "region": p["region"], "runtime": f"{runtime}.{p['region']}", "program": p["name"],
                "state": shown, "pid": p["pid"] if running else None,
                "uptime_s": round(up_for, 1) if up_for is not None else None,
                "restarts": p["restarts"],
                "endpoint": p["endpoint"] if runtime == "gateway" else None,
                "message": p.get("message", ""),
            })
    return rows


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


def _print_status(h: Home) -> bool:
    running = h.supervisor_pid() is not None
    rows = _rows(h, client.read_state(h), running)
    deployment = h.deployment() or {}
    table = Table(title=f"{deployment.get('name', 'msgctl')} — {h.root}", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for col in ("region", "runtime", "state", "pid", "uptime", "restarts", "endpoint"):
        # names stay whole; a long endpoint folds on a narrow terminal
        table.add_column(col, justify="right" if col in ("pid", "restarts") else "left",
                         no_wrap=col != "endpoint", overflow="fold")
    for r in rows:
        colour = _COLOURS.get(r["state"], "white")
        table.add_row(r["region"], r["runtime"], f"[{colour}]{r['state']}[/]",
                      str(r["pid"] or "-"), _uptime(r["uptime_s"]), str(r["restarts"]),
                      r["endpoint"] or "-")
    if rows:
        console.print(table)
    for r in rows:
        if r["message"] and r["runtime"].startswith("gateway"):
            console.print(f"[yellow]{r['program']}[/]: {r['message']}")
    return running


def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show every runtime of every region: state, pid, uptime, restarts, endpoint."""
    h = get_home(home)
    running = h.supervisor_pid() is not None
    if json_out:
        deployment = h.deployment() or {}
        out = {"home": str(h.root), "running": running, "topology": deployment.get("name"),
               "regions": deployment.get("regions", []),
               "runtimes": _rows(h, client.read_state(h), running)}
        print(json.dumps(out, indent=2))
    elif not h.deployment():
        console.print(f"no deployment under {h.root} (run 'msgctl up')")
    else:
        _print_status(h)
        if not running:
            console.print(f"[dim]not running (run 'msgctl up --home {h.root}')[/]")
    if not running:
        raise typer.Exit(EXIT_NOT_RUNNING)


def restart(
    target: Annotated[str, typer.Argument(help="Glob on runtimes or programs, e.g. 'gateway*'.")]
    = "*",
    home: HomeOpt = None,
) -> None:
    """Restart the processes hosting the matching runtimes (dependents stop first)."""
    h = get_home(home)
    with console.status(f"restarting {target}…"):
        reply = client.command(h, "restart", glob=target)
    programs = {p["name"]: p for p in reply["programs"]}
    for name in reply["restarted"]:
        p = programs[name]
        hosted = ", ".join(f"{r}.{p['region']}" for r in p["runtimes"])
        colour = "green" if p["state"] == RUNNING else "red"
        console.print(f"restarted {name} (hosts {hosted}): [{colour}]{p['state']}[/]")
        if p["state"] != RUNNING:
            raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(restart)

