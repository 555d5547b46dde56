"""The life of a deployment: prepare a home from a topology, start its supervisor, stop it.

`prepare` checks the ports, writes the plan and the deployment description and
prepares the programs' storage; `start_supervisor` launches the supervisor of a
prepared home and waits until every program is RUNNING; `stop_supervisor` and
`kill_deployment` end it. What the CLI shows while this runs (spinners, warnings,
engine download progress) comes in through `Hooks`; nothing here prints.
"""

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
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgctl import chaosplan
from msgctl import topology as topo_mod
from msgctl.errors import MsgctlError, UsageError
from msgctl.home import PRIVATE_UMASK, Home, open_private, private_umask, write_json_atomic
from msgctl.infra import capacity, toxiproxy
from msgctl.infra.catalog import ENGINES
from msgctl.infra.programs import run_prepare
from msgctl.supervisor import client
from msgctl.supervisor.daemon import FATAL, RUNNING, STOPPED
from msgctl.supervisor.program import ENGINE


def _no_warning(level: str, text: str) -> None:
    return None


def _no_step(text: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


@dataclass
class Hooks:
    """How the library's long steps report to whoever drives them.

    `warn(level, text)` gets warnings ("warning") and notes ("note"); `step(text)` wraps a
    slow step (the CLI shows a spinner); `ensure_engines(topology)` fetches the engines a
    cluster topology runs (None: they must be in the cache already)."""

    warn: Callable[[str, str], None] = _no_warning
    step: Callable[[str], AbstractContextManager[Any]] = _no_step
    ensure_engines: Callable[[topo_mod.Topology], Any] | None = None


def check_port_free(host: str, port: int) -> None:
    """`UsageError` when host:port cannot be bound (another deployment holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the server binds: connections in TIME_WAIT from a previous run do not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"port {port} on {host} is in use ({exc.strerror}); stop what "
                             "holds it, or choose other ports with --port-offset") from None


def ports(topo: topo_mod.Topology, engines_only: bool) -> list[tuple[str, int]]:
    """What the plan will listen on: gateways and runtimes, and the engines msgctl runs."""
    out = []
    for region in topo.regions:
        for port, what in region.ports():
            if what == "agent":  # one may run already (`msgctl agent serve`): plan_agents
                continue
            is_engine = what.split()[0] in ENGINES
            if is_engine or not engines_only:
                out.append((region.host, port))
    return out


def proxy_ports(proxies: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """What the link proxies (Toxiproxy) of a chaos plan listen on: API and proxies."""
    out = []
    for entry in proxies.values():
        host, _, api = entry["api"].removeprefix("http://").rpartition(":")
        out.append((host, int(api)))
        out += [(p["listen_host"], int(p["listen_port"])) for p in entry["proxies"]]
    return out


def prepare(home: Home, topology: str, port_offset: int, engines_only: bool = False,
            hooks: Hooks | None = None) -> list[topo_mod.Program]:
    """Make `home` ready to start `topology` (only its engines with `engines_only`): the
    ports free, storage prepared, the plan and deployment files written. The programs.

    All of it under the private umask: the configs, engines' folders and what their
    prepare steps write are the user's alone from the start (see `msgctl.home`)."""
    with private_umask():
        return _prepare(home, topology, port_offset, engines_only, hooks or Hooks())


def _prepare(home: Home, topology: str, port_offset: int, engines_only: bool,
             hooks: Hooks) -> list[topo_mod.Program]:
    topo = topo_mod.load(topology, port_offset)
    if engines_only and topo.backend != "cluster":
        raise UsageError(f"{topo.name}: backend {topo.backend} runs no engines (use a "
                         "topology with backend: cluster, e.g. regions/one-region.yaml)")
    for host, port in ports(topo, engines_only):
        check_port_free(host, port)
    for check, level, detail in capacity.checks(topo):
        if check == "memory" and level != "ok":  # `msgctl doctor` has the whole picture
            hooks.warn("warning", detail)
    home.ensure()
    if topo.backend == "cluster" and hooks.ensure_engines is not None:
        hooks.ensure_engines(topo)  # instant when cached
    building = (topo.multi_region_cluster and topo.chaos.link_proxy != "off"
                and toxiproxy.binary() is None)
    with hooks.step("building the link proxy (Toxiproxy) with go install, once…"
                    if building else "checking what network faults this machine allows…"):
        chaos, proxy_binary, warnings = chaosplan.prepare(topo, home.root)
    for warning in warnings:
        hooks.warn("note", warning)
    if proxy_binary is not None:
        for host, port in proxy_ports(chaos.proxies):
            check_port_free(host, port)
    if engines_only:
        programs = topo_mod.plan_engines(topo, home.root, proxy_binary)
    else:
        programs = topo_mod.plan_agents(topo, sys.executable, home.root) + topo_mod.plan(
            topo, sys.executable, home.config, home.dirs, home.secret(), home_root=home.root,
            proxy_binary=proxy_binary)
    for p in programs:
        if p.prepare and not (p.prepare_creates and Path(p.prepare_creates).exists()):
            with hooks.step(f"{p.name}: preparing its storage…"):
                run_prepare(p, home.logs / f"{p.name}.log")
    write_json_atomic(home.plan_file, {"programs": [p.to_dict() for p in programs],
                                       "chaos": chaos.to_dict()})
    deployment = json.loads(topo_mod.to_json(topo, home.root))
    deployment.update(home=str(home.root), port_offset=port_offset, created=time.time(),
                      scope="engines" if engines_only else "all")
    write_json_atomic(home.deployment_file, deployment)
    home.state_file.unlink(missing_ok=True)
    return programs


def default_timeout(programs: list[topo_mod.Program]) -> float:
    """Wait for the slowest chain: runtimes get 120 s, plus the engines' deadlines along
    the longest chain of engines that wait for each other (Cassandra nodes joining), plus
    the longest warm-up (they run side by side)."""
    by_name = {p.name: p for p in programs if p.kind == ENGINE}
    chain: dict[str, float] = {}

    def longest(name: str) -> float:
        if name not in chain:
            p = by_name[name]
            chain[name] = (p.start_timeout or 0.0) + max(
                (longest(d) for d in p.depends_on if d in by_name), default=0.0)
        return chain[name]

    warmup = max((p.warmup_s for p in by_name.values()), default=0.0)
    return 120.0 + max((longest(n) for n in by_name), default=0.0) + warmup


def launch_supervisor(h: Home) -> subprocess.Popen[bytes]:
    """Start the supervisor daemon of a prepared home in a session of its own."""
    with open_private(h.logs / "supervisor.log") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "msgctl.supervisor.daemon", "--home", str(h.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(h.root), umask=PRIVATE_UMASK)


def wait_up(home: Home, proc: subprocess.Popen[bytes], timeout: float,
            on_state: Callable[[list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Poll the supervisor's state until every program is RUNNING and no engine is still
    warming up (msgctl.infra.warmup), and return that state; or raise
    `MsgctlError` when one failed, the supervisor exited or `timeout` ran out. A warm-up
    still running when the time is up does not fail it: everything works, the first
    minute is only slower. `on_state` sees the programs at every poll."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MsgctlError(f"the supervisor exited ({proc.returncode}); see "
                              f"{home.logs / 'supervisor.log'}")
        state = client.read_state(home)
        if state:
            programs = state["programs"]
            if on_state is not None:
                on_state(programs)
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
            if _running(programs) and not any(warming(p) for p in programs):
                return state
        time.sleep(0.1)
    if state and _running(state["programs"]):
        return state  # only warm-ups left
    raise MsgctlError(f"not ready after {timeout:.0f}s; see 'msgctl logs' and 'msgctl status'")


def _running(programs: list[dict[str, Any]]) -> bool:
    return bool(programs) and all(p["state"] == RUNNING for p in programs)


def warming(program: dict[str, Any]) -> bool:
    """Is this program (a supervisor state entry) an engine still warming up?"""
    return bool(program.get("warmup", {}).get("state") == "warming")


def start_supervisor(h: Home, timeout: float,
                     on_state: Callable[[list[dict[str, Any]]], None] | None = None) -> float:
    """Launch the supervisor of a prepared home and return once every program is RUNNING
    (the seconds it took); on failure, stop it again and raise."""
    proc = launch_supervisor(h)
    t0 = time.monotonic()
    try:
        wait_up(h, proc, timeout, on_state)
    except MsgctlError:
        stop_supervisor(h, proc.pid, timeout=150)
        raise
    return time.monotonic() - t0


def run_foreground(h: Home) -> None:
    """Run the supervisor of a prepared home in this process until Ctrl-C."""
    from msgctl.supervisor.daemon import Supervisor, load_chaos_plan, load_plan

    sup = Supervisor(h, load_plan(h), chaos=load_chaos_plan(h))
    # this process is the supervisor now: private files, as the daemon's (see its main)
    with private_umask(), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(sup.run())


def stop_supervisor(h: Home, pid: int, timeout: float) -> bool:
    """SIGTERM the supervisor (it stops its programs, dependents first) and wait; False if
    it is still there after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (up's failure path)
        if h.supervisor_pid() is None or not alive(pid):
            return True
        time.sleep(0.1)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_deployment(h: Home, pid: int) -> None:
    """A hung supervisor: SIGKILL it and every program group it left, and undo its faults."""
    os.kill(pid, signal.SIGKILL)
    for p in (client.read_state(h) or {}).get("programs", []):
        if p.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p["pid"], signal.SIGKILL)
    h.pid_file.unlink(missing_ok=True)
    chaos_leftovers(h)


def chaos_leftovers(h: Home) -> None:
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
