"""`msgctl doctor`: preflight checks before `up`.

For a cluster topology it also checks what the provisioned engines need: Java
17+ and Maven for Kafka and Cassandra (unless their jars are cached),
``redis-server`` for Redis, and that every engine port is free; and for every
topology whether its processes fit this machine's memory and cores.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from msgctl import topology as topo_mod
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.cli.lifecycle import OffsetOpt, TopologyOpt
from msgctl.deploy.lifecycle import check_port_free
from msgctl.errors import EXIT_FAILED, MsgctlError
from msgctl.infra import capacity, fetch
from msgctl.infra.catalog import CASSANDRA, KAFKA, REDIS
from msgctl.infra.programs import provisioned


def _java_major(java: str) -> tuple[int, str]:
    """Java's major version and its version line (``java -version`` prints on stderr)."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True,
                             timeout=20).stderr
    except (OSError, subprocess.TimeoutExpired):
        return 0, "does not run"
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0, out.strip().splitlines()[0] if out.strip() else "unknown version"
    major = int(match.group(1))
    if major == 1 and match.group(2):  # 1.8 style
        major = int(match.group(2))
    return major, out.strip().splitlines()[0]


def engine_checks(topo: topo_mod.Topology) -> list[tuple[str, str, str]]:
    """What the provisioned engines of a cluster topology need from this machine."""
    specs = [s for r in topo.regions for s in provisioned(r.engines)]
    jvm = [s for s in specs if s.engine in (KAFKA, CASSANDRA)]
    out: list[tuple[str, str, str]] = []
    if jvm:
        java = shutil.which("java")
        if java is None:
            out.append(("java", "fail", "not on PATH; Kafka, Cassandra and S3Proxy need Java 17+"))
        else:
            major, line = _java_major(java)
            out.append(("java", "ok" if major >= 17 else "fail",
                        line if major >= 17 else f"{line} (Java 17+ needed)"))
        missing = [s for s in jvm if fetch.cached(s.engine, s.version) is None]
        mvn = shutil.which("mvn")
        if not missing:
            out.append(("engine jars", "ok", f"cached in {fetch.cache_root()}"))
        else:
            names = ", ".join(sorted({f"{s.engine} {s.version}" for s in missing}))
            out.append(("engine jars", "warn", f"{names} not cached yet; 'msgctl infra fetch' "
                        "or 'msgctl up' fetches them"))
            out.append(("mvn", "ok" if mvn else "fail",
                        mvn or "not on PATH; needed to fetch the engine jars"))
    if any(s.engine == REDIS for s in specs):
        redis = shutil.which("redis-server")
        out.append(("redis-server", "ok" if redis else "fail",
                    redis or "not on PATH; apt-get install redis-server"))
    return out


def _network_faults(topo: topo_mod.Topology) -> tuple[str, str, str]:
    """Will `msgctl chaos partition|link` work with this topology here?"""
    from chaos import netfilter
    from msgctl.infra import toxiproxy

    reason = netfilter.unavailable_reason()
    mode = topo.chaos.link_proxy
    if reason is not None:
        return ("network faults", "fail" if mode == "on" else "warn",
                f"off: they need {reason} (kill, pause and stop work anyway)")
    if mode == "off":
        return "network faults", "ok", "partitions on; link faults off (chaos.link_proxy: off)"
    if toxiproxy.binary() is None and shutil.which("go") is None:
        return ("network faults", "fail" if mode == "on" else "warn",
                "partitions on; link faults off: Toxiproxy is built with Go, not on PATH")
    built = "built" if toxiproxy.binary() else "built at the first up (go install)"
    return "network faults", "ok", f"partitions and link faults on (Toxiproxy {built})"


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
        for port, what in region.ports():
            name = f"port {region.host}:{port}" + (f" ({what})" if topo.backend == "cluster"
                                                   else "")
            try:
                check_port_free(region.host, port)
                add(name, "ok", "free")
            except MsgctlError as exc:
                add(name, "ok" if running else "fail",
                    "in use by this deployment" if running else exc.message)
    if topo is not None and topo.backend == "cluster":
        for check in engine_checks(topo):
            add(*check)
    if topo is not None:
        for check in capacity.checks(topo):
            add(*check)
    if topo is not None and topo.multi_region_cluster:
        add(*_network_faults(topo))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    add("open files", "ok" if soft >= 4096 else "warn",
        f"soft {soft}, hard {hard} (each connection holds one)")
    probe_dir = h.root if h.root.exists() else h.root.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    free = shutil.disk_usage(probe_dir).free
    add("disk", "ok" if free > 1 << 30 else "warn", f"{free / (1 << 30):.1f} GiB free at "
        f"{probe_dir}")
    failed = any(r == "fail" for _, r, _ in checks)
    if json_out:
        print(json.dumps({"ok": not failed, "topology": topo.name if topo else None,
                          "checks": [{"check": c, "result": r, "detail": d}
                                     for c, r, d in checks]}, indent=2))
    else:
        _print_table(checks)
    if failed:
        raise typer.Exit(EXIT_FAILED)


CHECK_WIDTH = 24  # at least: "port 127.0.0.1:40093" fits, longer names wrap at spaces
DETAIL_WIDTH = 36  # the check column gives way to this much detail
_PATH = re.compile(r"(?:^|\s)((?:/|~/|[a-z][a-z0-9+.-]*://)\S+)")


def _print_table(checks: list[tuple[str, str, str]]) -> None:
    """The checks as a table that fits the terminal (80 columns too): a cell wraps at its
    spaces, and a path or URL too long for the detail column is listed under the table
    rather than folded (half a path cannot be copied)."""
    table = Table(title="msgctl doctor", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    check_width = min(max(len(c) for c, _, _ in checks),
                      max(CHECK_WIDTH, console.width - DETAIL_WIDTH - len("result") - 4))
    table.add_column("check", max_width=check_width, overflow="fold")
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    detail_width = console.width - check_width - len("result") - 4
    colours = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    below: list[str] = []
    for c, r, d in checks:
        for path in _PATH.findall(d):
            if len(path) > detail_width:
                below.append(f"{c}: {path}")
                d = d.replace(path, f"(path {len(below)} below)")
        table.add_row(escape(c), f"[{colours[r]}]{r}[/]", escape(d))
    console.print(table)
    for n, line in enumerate(below, 1):
        console.print(f"({n}) {escape(line)}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(doctor)

