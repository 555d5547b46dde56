"""`msgctl doctor`: preflight checks before `up`."""

from __future__ import annotations

import json
import resource
import shutil
import sys

import typer
from rich.table import Table

from msgctl import topology as topo_mod
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.cli.lifecycle import OffsetOpt, TopologyOpt, _check_port_free
from msgctl.errors import EXIT_FAILED, MsgctlError


def doctor(
    topology: TopologyOpt = topo_mod.DEFAULT_TOPOLOGY,
    home: HomeOpt = None,
    port_offset: OffsetOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Check that this machine can run the topology: Python, ports, file limits, disk."""
    h = get_home(home)
    checks: list[tuple[str, str, str]] = []  # (check, ok|warn|fail, detail)

    def add(name: str, level: str, detail: str) -> None:
        checks.append((name, level, detail))

    py = sys.version_info
    add("python", "ok" if py >= (3, 11) else "fail", f"{py.major}.{py.minor}.{py.micro}")
    try:
        topo = topo_mod.load(topology, port_offset)
        add("topology", "ok", f"{topo.name}: {len(topo.regions)} region(s), {topo.backend}")
    except MsgctlError as exc:
        topo = None
        add("topology", "fail", exc.message)
    running = h.supervisor_pid() is not None
    for region in topo.regions if topo else []:
        try:
            _check_port_free(region.host, region.gateway_port)
            add(f"port {region.host}:{region.gateway_port}", "ok", "free")
        except MsgctlError as exc:
            add(f"port {region.host}:{region.gateway_port}", "ok" if running else "fail",
                "in use by this deployment" if running else exc.message)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    add("open files", "ok" if soft >= 4096 else "warn",
        f"soft {soft}, hard {hard} (each connection holds one)")
    probe_dir = h.root if h.root.exists() else h.root.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    free = shutil.disk_usage(probe_dir).free
    add("disk", "ok" if free > 1 << 30 else "warn", f"{free / (1 << 30):.1f} GiB free at "
        f"{probe_dir}")
    if json_out:
        print(json.dumps([{"check": c, "result": r, "detail": d} for c, r, d in checks]))
    else:
        table = Table(title="msgctl doctor", title_justify="left")
        for col in ("check", "result", "detail"):
            table.add_column(col)
        colours = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        for c, r, d in checks:
            table.add_row(c, f"[{colours[r]}]{r}[/]", d)
        console.print(table)
    if any(r == "fail" for _, r, _ in checks):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command()(doctor)

