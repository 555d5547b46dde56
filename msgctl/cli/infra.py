"""`msgctl infra`: fetch, start, stop and inspect the engines (Kafka, Cassandra, Redis).

`fetch` fills the engine cache (outside any deployment) with Maven; `start`
runs just the engines of a cluster topology under the supervisor of a home
and waits for their probes; `status` asks each engine in its own protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl import topology as topo_mod
from msgctl.cli import engines as engines_cli
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.cli.lifecycle import (
    OffsetOpt,
    TopologyOpt,
    prepare,
    print_json,
    print_status,
    start_supervisor,
    stop_deployment,
)
from msgctl.deploy.lifecycle import default_timeout
from msgctl.deploy.status import action_report
from msgctl.errors import EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.infra import fetch as fetch_mod
from msgctl.infra import toxiproxy
from msgctl.infra.catalog import CATALOG
from msgctl.supervisor import client
from msgctl.supervisor.daemon import check, load_plan
from msgctl.supervisor.program import ENGINE

infra_app = typer.Typer(help="Fetch, start, stop and inspect the engines (Kafka, Cassandra, "
                             "Redis).", no_args_is_help=True)

CLUSTER_TOPOLOGY = "regions/one-region.yaml"
EngineOpt = Annotated[str, typer.Option(
    "--engine", "-e", help="kafka, cassandra or all.")]


@infra_app.command("fetch")
def fetch(
    topology: TopologyOpt = CLUSTER_TOPOLOGY,
    engine: EngineOpt = "all",
    json_out: JsonOpt = False,
) -> None:
    """Download the engines' jars into the cache with Maven (instant when cached); with
    several regions, also build the link proxy (Toxiproxy) with go install."""
    engines = [e for e, c in CATALOG.items() if c.source == "maven"]
    if engine not in ("all", *engines, toxiproxy.NAME):
        raise UsageError(f"--engine must be one of {', '.join(engines)}, {toxiproxy.NAME} or "
                         f"all, not '{engine}'")
    topo = topo_mod.load(topology)
    pairs = engines_cli.wanted(topo, engine)
    proxy = (engine in ("all", toxiproxy.NAME) and topo.multi_region_cluster
             and topo.chaos.link_proxy != "off")
    if not pairs and not proxy:
        raise UsageError(f"{topo.name}: no engine to fetch (backend {topo.backend}; "
                         "external engines are not fetched)")
    t0 = time.monotonic()
    got = engines_cli.ensure(pairs, quiet=json_out)
    if proxy:
        cached = toxiproxy.binary() is not None
        with console.status("building Toxiproxy with go install…", spinner="dots") if (
                not cached and not json_out) else contextlib.nullcontext():
            toxiproxy.ensure()
        hit = fetch_mod.cached(toxiproxy.NAME, toxiproxy.VERSION)
        if hit is not None:
            hit.cached = cached
            got.append(hit)
    took = time.monotonic() - t0
    if json_out:
        print(json.dumps({"cache": str(fetch_mod.cache_root()), "seconds": round(took, 2),
                          "engines": [g.to_dict() for g in got]}, indent=2))
        return
    # fits 80 columns: each engine's folder is named relative to the cache (the title), so
    # no path is folded in two
    root = fetch_mod.cache_root()
    table = Table(title=f"engine cache — {root}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("engine", "version", "files", "size", "fetch", "folder"):
        table.add_column(col, justify="right" if col in ("files", "size") else "left",
                         no_wrap=True, overflow="ellipsis" if col != "folder" else "crop")
    for g in got:
        path = Path(g.path)
        folder = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        table.add_row(g.engine, g.version, str(g.jars), f"{g.bytes / 1e6:.0f} MB",
                      "cached" if g.cached else f"{g.seconds:.1f}s", folder)
    console.print(table)


@infra_app.command("start")
def start(
    topology: TopologyOpt = CLUSTER_TOPOLOGY,
    home: HomeOpt = None,
    port_offset: OffsetOpt = 0,
    timeout: Annotated[float | None, typer.Option(
        help="Seconds to wait for the probes (default: the engines' start deadline + 120, "
             "plus their longest warm-up).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start just the engines of a cluster topology and wait until each answers its probe."""
    h = get_home(home)
    if h.supervisor_pid() is not None:
        if json_out:
            print_json(action_report(h, "infra start", True, [], already_up=True, took_s=0.0))
            return
        console.print(f"already running under {h.root}")
        print_status(h)
        return
    programs = prepare(h, topology, port_offset, engines_only=True)
    if not programs:
        raise UsageError("every engine of this topology is external: nothing to start")
    took = start_supervisor(h, timeout if timeout is not None else default_timeout(programs),
                            show=not json_out)
    if json_out:
        print_json(action_report(h, "infra start", True, [p.name for p in programs],
                                 already_up=False, took_s=round(took, 1)))


@infra_app.command("stop")
def stop(
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before stragglers are killed.")]
    = 150.0,
    json_out: JsonOpt = False,
) -> None:
    """Stop the engines started with `msgctl infra start` (data is kept)."""
    h = get_home(home)
    if h.supervisor_pid() is not None and (h.deployment() or {}).get("scope") != "engines":
        raise UsageError(f"the whole deployment runs under {h.root}; 'msgctl down' stops "
                         "its runtimes, then its engines")
    stop_deployment(h, timeout, json_out, "infra stop")


async def _probe_all(programs: list[Any]) -> list[dict[str, Any] | None]:
    # a live look only: the start-time steps (Kafka ACLs, Cassandra logins) are not redone
    return list(await asyncio.gather(*(check(p, timeout=3.0, live=True) for p in programs)))


@infra_app.command("status")
def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Each engine of the home: version, ports, data dir, pid and health from a live probe."""
    h = get_home(home)
    try:
        engines = [p for p in load_plan(h) if p.kind == ENGINE]
    except (OSError, ValueError, KeyError):
        engines = []
    running = h.supervisor_pid() is not None
    if not engines:
        if json_out:  # scripts get the same object, with no engine in it
            print(json.dumps({"home": str(h.root), "running": running, "engines": []},
                             indent=2))
            raise typer.Exit(EXIT_NOT_RUNNING)
        raise MsgctlError(f"no engines under {h.root} (run 'msgctl infra start' or "
                          "'msgctl up' with a cluster topology)", EXIT_NOT_RUNNING)
    state = {p["name"]: p for p in (client.read_state(h) or {}).get("programs", [])}
    answers = asyncio.run(_probe_all(engines))
    rows = []
    for p, answer in zip(engines, answers, strict=True):
        st = state.get(p.name, {})
        rows.append({
            "engine": p.info.get("engine"), "region": p.region, "program": p.name,
            "version": p.info.get("version"), "ports": p.info.get("ports", {}),
            "endpoint": p.endpoint, "data_dir": p.info.get("data_dir"),
            "state": st.get("state", "STOPPED") if running else "STOPPED",
            "pid": st.get("pid") if running else None,
            "healthy": answer is not None,
            "probe": {k: v for k, v in (answer or {}).items() if k not in ("ready", "runtimes")},
        })
    if json_out:
        print(json.dumps({"home": str(h.root), "running": running, "engines": rows}, indent=2))
    else:
        table = Table(title=f"engines — {h.root}", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("engine", "region", "version", "ports", "state", "pid", "health"):
            table.add_column(col, justify="right" if col == "pid" else "left",
                             no_wrap=col != "ports", overflow="fold")
        for r in rows:
            ports = " ".join(f"{k.replace('_port', '')}={v}" for k, v in r["ports"].items())
            health = "[green]ok[/]" if r["healthy"] else "[red]no answer[/]"
            table.add_row(r["engine"], r["region"], r["version"], ports, r["state"],
                          str(r["pid"] or "-"), health)
        console.print(table)
        console.print(f"[dim]config, data and logs under {h.root / 'engines'}/<engine>.<region>; "
                      "'msgctl logs kafka*' shows an engine's output[/]")
    if not running:
        raise typer.Exit(EXIT_NOT_RUNNING)
