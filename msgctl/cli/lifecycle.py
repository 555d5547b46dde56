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
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl import chaosplan
from msgctl import topology as topo_mod
from msgctl.cli import engines as engines_cli
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home, write_json_atomic
from msgctl.infra import capacity, replication, toxiproxy
from msgctl.infra.catalog import ENGINES
from msgctl.infra.programs import run_prepare
from msgctl.supervisor import client
from msgctl.supervisor.daemon import FATAL, RUNNING, STOPPED, Supervisor
from msgctl.supervisor.program import ENGINE

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


def _ports(topo: topo_mod.Topology, engines_only: bool) -> list[tuple[str, int]]:
    """What the plan will listen on: gateways and runtimes, and the engines msgctl runs."""
    out = []
    for region in topo.regions:
        for port, what in region.ports():
            is_engine = what.split()[0] in ENGINES
            if is_engine or not engines_only:
                out.append((region.host, port))
    return out


def _prepare(home: Home, topology: str, port_offset: int,
             engines_only: bool = False) -> list[topo_mod.Program]:
    topo = topo_mod.load(topology, port_offset)
    if engines_only and topo.backend != "cluster":
        raise UsageError(f"{topo.name}: backend {topo.backend} runs no engines (use a "
                         "topology with backend: cluster, e.g. regions/one-region.yaml)")
    for host, port in _ports(topo, engines_only):
        _check_port_free(host, port)
    for check, level, detail in capacity.checks(topo):
        if check == "memory" and level != "ok":  # `msgctl doctor` has the whole picture
            err_console.print(f"[yellow]warning[/]: {detail}")
    home.ensure()
    if topo.backend == "cluster":
        engines_cli.ensure(engines_cli.wanted(topo))  # instant when cached
    building = (topo.multi_region_cluster and topo.chaos.link_proxy != "off"
                and toxiproxy.binary() is None)
    with console.status("building the link proxy (Toxiproxy) with go install, once…"
                        if building else "checking what network faults this machine allows…"):
        chaos, proxy_binary, warnings = chaosplan.prepare(topo, home.root)
    for warning in warnings:
        err_console.print(f"[yellow]note[/]: {warning}")
    if proxy_binary is not None:
        for host, port in _proxy_ports(chaos.proxies):
            _check_port_free(host, port)
    if engines_only:
        programs = topo_mod.plan_engines(topo, home.root, proxy_binary)
    else:
        programs = topo_mod.plan(topo, sys.executable, home.config, home.dirs, home.secret(),
                                 home_root=home.root, proxy_binary=proxy_binary)
    for p in programs:
        if p.prepare and not (p.prepare_creates and Path(p.prepare_creates).exists()):
            with console.status(f"{p.name}: preparing its storage…"):
                run_prepare(p, home.logs / f"{p.name}.log")
    write_json_atomic(home.plan_file, {"programs": [p.to_dict() for p in programs],
                                       "chaos": chaos.to_dict()})
    deployment = json.loads(topo_mod.to_json(topo))
    deployment.update(home=str(home.root), port_offset=port_offset, created=time.time(),
                      scope="engines" if engines_only else "all")
    write_json_atomic(home.deployment_file, deployment)
    home.state_file.unlink(missing_ok=True)
    return programs


def _proxy_ports(proxies: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    out = []
    for entry in proxies.values():
        host, _, api = entry["api"].removeprefix("http://").rpartition(":")
        out.append((host, int(api)))
        out += [(p["listen_host"], int(p["listen_port"])) for p in entry["proxies"]]
    return out


def default_timeout(programs: list[topo_mod.Program]) -> float:
    """Wait for the slowest chain: runtimes get 120 s, plus the engines' deadlines along
    the longest chain of engines that wait for each other (Cassandra nodes joining)."""
    by_name = {p.name: p for p in programs if p.kind == ENGINE}
    chain: dict[str, float] = {}

    def longest(name: str) -> float:
        if name not in chain:
            p = by_name[name]
            chain[name] = (p.start_timeout or 0.0) + max(
                (longest(d) for d in p.depends_on if d in by_name), default=0.0)
        return chain[name]

    return 120.0 + max((longest(n) for n in by_name), default=0.0)


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
                skipped = [p for p in programs if p["state"] == STOPPED
                           and p.get("message", "").startswith("not started")]
                if fatal:
                    p = fatal[0]
                    raise MsgctlError(f"{p['name']} failed to start: {p['message']}; see "
                                      f"'msgctl logs {p['name']}'")
                if skipped:
                    p = skipped[0]
                    raise MsgctlError(f"{p['name']} {p['message']}")
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
        console.print(f"already up under {h.root}")
        _print_status(h)
        return
    programs = _prepare(h, topology, port_offset)
    if foreground:
        _run_foreground(h)
        return
    start_supervisor(h, timeout if timeout is not None else default_timeout(programs))
    console.print("next: [bold]msgctl token alice phone[/] for a JWT, then connect a "
                  "WebSocket client to the gateway URL above")


def start_supervisor(h: Home, timeout: float) -> None:
    """Launch the supervisor of a prepared home and return once every program is RUNNING."""
    with (h.logs / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "msgctl.supervisor.daemon", "--home", str(h.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(h.root))
    t0 = time.monotonic()
    try:
        _wait_up(h, proc, timeout)
    except MsgctlError:
        _stop_supervisor(h, proc.pid, timeout=150)
        raise
    console.print(f"[green]up[/] in {time.monotonic() - t0:.1f}s under {h.root}")
    _print_status(h)


def _run_foreground(h: Home) -> None:
    from msgctl.supervisor.daemon import load_chaos_plan, load_plan

    console.print(f"running in the foreground under {h.root}; Ctrl-C stops it")
    sup = Supervisor(h, load_plan(h), chaos=load_chaos_plan(h))
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
    timeout: Annotated[float, typer.Option(help="Seconds before stragglers are killed.")] = 150.0,
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
        _chaos_leftovers(h)
        err_console.print(f"[yellow]the supervisor did not stop in {timeout:.0f}s; killed[/]")
    console.print(f"[green]down[/] ({h.root})")


def _chaos_leftovers(h: Home) -> None:
    """What a killed supervisor could not undo: its faults, chains and cgroups."""
    from chaos import cgroups
    from chaos.host import heal_offline
    from chaos.ledger import Ledger
    from msgctl.supervisor.daemon import load_chaos_plan

    plan = load_chaos_plan(h)
    if plan is None:
        return
    with contextlib.suppress(OSError):
        heal_offline(Ledger.load(h.run), plan, remove_base=plan.network)
        if plan.network:
            cgroups.remove(plan.deployment)


def _rows(h: Home, state: dict[str, Any] | None, running: bool) -> list[dict[str, Any]]:
    rows = []
    now = time.time()
    for p in (state or {}).get("programs", []):
        single = len(p["runtimes"]) == 1
        for runtime, rstate in p["runtimes"].items():
            # FATAL outlives the supervisor: `up` gave up on it, and that is the news
            pstate = p["state"] if running or p["state"] == FATAL else "STOPPED"
            shown = pstate
            if pstate == RUNNING and rstate not in ("ready", "-"):
                shown = rstate.upper()
            up_for = now - p["started_at"] if running and p["started_at"] and pstate in (
                RUNNING,) else None
            engine = p.get("kind") == ENGINE
            rows.append({
                # a process of its own (gateway-2.local, kafka.local) is named as its program
                "region": p["region"], "runtime": p["name"] if single else
                f"{runtime}.{p['region']}", "program": p["name"],
                "kind": p.get("kind", "runtime"), "state": shown,
                "pid": p["pid"] if running else None,
                "uptime_s": round(up_for, 1) if up_for is not None else None,
                "restarts": p["restarts"],
                "endpoint": p["endpoint"] if runtime == "gateway" or engine else None,
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
    links = _replication(deployment) if running else []
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
        depths = _push_queue_depths(deployment)
        if depths:
            console.print("push queue: " + ", ".join(
                f"{region} {'?' if d is None else d}" for region, d in depths.items()))
    for r in rows:
        if r["message"] and (r["runtime"].startswith("gateway") or r["kind"] == ENGINE):
            console.print(f"[yellow]{r['program']}[/]: {r['message']}")
    faults = _faults_in_force(h)
    if faults:
        console.print("[bold red]faults in force[/]: " + "; ".join(
            f"{f['id']} {f['description']}" for f in faults) + " ('msgctl chaos heal')",
            highlight=False)
    return running


def _faults_in_force(h: Home) -> list[dict[str, Any]]:
    from chaos.ledger import Ledger

    return [e.public() for e in Ledger.load(h.run).faults]


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms" if value < 10_000 else f"{value / 1000:.0f} s"


def _replication(deployment: dict[str, Any]) -> list[replication.LinkLag]:
    """Lag of every MirrorMaker 2 link of a multi-region cluster (none otherwise)."""
    regions = deployment.get("regions", [])
    if deployment.get("backend") != "cluster" or len(regions) < 2:
        return []
    return replication.links(regions)


def _push_queue_depths(deployment: dict[str, Any]) -> dict[str, int | None]:
    """Each region's push queue depth, from its push runtime's /metrics (None: no answer)."""
    out: dict[str, int | None] = {}
    cluster = deployment.get("backend") == "cluster"
    for r in deployment.get("regions", []):
        port = r["gateway_port"] + (topo_mod.RUNTIME_PORT_OFFSETS["push"] if cluster else 0)
        out[r["name"]] = None
        try:
            with urllib.request.urlopen(f"http://{r['host']}:{port}/metrics", timeout=1) as resp:
                text = resp.read().decode()
        except (OSError, ValueError):
            continue
        for line in text.splitlines():
            if line.startswith("msgctl_push_queue "):
                out[r["name"]] = int(float(line.split()[1]))
    return out


def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show every runtime of every region: state, pid, uptime, restarts, endpoint."""
    h = get_home(home)
    running = h.supervisor_pid() is not None
    if json_out:
        deployment = h.deployment() or {}
        out = {"home": str(h.root), "running": running, "topology": deployment.get("name"),
               "regions": deployment.get("regions", []),
               "runtimes": _rows(h, client.read_state(h), running),
               "push_queue": _push_queue_depths(deployment) if running and
               deployment.get("scope") != "engines" else {},
               "replication": [link.to_dict() for link in _replication(deployment)]
               if running else [],
               "faults": _faults_in_force(h)}
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

