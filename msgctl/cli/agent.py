"""`msgctl agent serve|list`: the regions' gRPC agents.

`msgctl up` starts an agent for each region whose topology entry names an `agent:`
address (HOST:PORT); every verb then reaches that region's programs, logs and faults
through it, under mutual TLS with the deployment's CA. `agent list` shows whether each
answers and which msgctl it runs; `agent serve` runs one in the foreground (what the
supervisor runs; under systemd, start it before `msgctl up` and `up` uses it).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from msgctl import __version__
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.errors import EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.tls import TlsError, ca_files, init_ca, server_cert

agent_app = typer.Typer(help="The regions' control-plane agents (gRPC, mutual TLS).",
                        no_args_is_help=True)




@agent_app.command("list")
def list_agents(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Each region's agent: its address, whether it answers, and its msgctl version."""
    from msgctl.agent import transport  # grpc loads only for the verbs that use it

    h = get_home(home)
    deployment = h.deployment()
    if not deployment:
        raise MsgctlError(f"no deployment under {h.root} (run 'msgctl up')", EXIT_NOT_RUNNING)
    if not transport.agents_of(deployment):
        raise UsageError(f"the deployment under {h.root} has no agents (a region names one "
                         "with 'agent: HOST:PORT' in its topology)")
    with transport.Agents(h, deployment) as agents:
        _, rows = transport.status_all(h, agents)
    out = [{"region": r["region"], "address": r["address"], "state": r["state"],
            "version": r["version"], **({"error": r["error"]} if r["error"] else {})}
           for r in rows]
    if json_out:
        print(json.dumps(out))
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for col in ("region", "address", "state", "version", "note"):
            table.add_column(col, no_wrap=col != "note", overflow="fold")
        for r, raw in zip(out, rows, strict=True):
            colour = {"up": "green", "idle": "yellow"}.get(r["state"], "bold red")
            since = (f"since {time.strftime('%H:%M:%S', time.localtime(raw['since']))}"
                     if raw.get("since") else "")
            note = (transport.version_note(r["region"], r["version"] or "") or since
                    or (raw.get("reason") or ""))
            table.add_row(r["region"], r["address"], f"[{colour}]{r['state']}[/]",
                          r["version"] or "-", note)
        console.print(table)
    if not any(r["state"] in ("up", "idle") for r in out):
        raise typer.Exit(1)  # none answers


@agent_app.command("serve")
def serve(
    region: Annotated[str, typer.Option("--region", "-r", help="The region it serves.")],
    listen: Annotated[str | None, typer.Option(
        "--listen", help="HOST:PORT to listen on (default: the region's agent address).",
        show_default=False)] = None,
    topology: Annotated[str | None, typer.Option(
        "--topology", "-t", help="Where the region's agent address is when HOME has no "
        "deployment yet (a topology file or a bundled name).", show_default=False)] = None,
    port_offset: Annotated[int, typer.Option(
        "--port-offset", help="As given to 'msgctl up' (with --topology).")] = 0,
    home: HomeOpt = None,
) -> None:
    """Run REGION's agent in the foreground until Ctrl-C or SIGTERM.

    Started before `msgctl up` (under systemd, say), `up` uses it instead of starting
    its own; it keeps running across `msgctl down`."""
    h = get_home(home)
    deployment = h.deployment() or {}
    if topology is not None:
        from msgctl import topology as topo_mod

        topo = topo_mod.load(topology, port_offset)
        deployment = {"regions": [{"name": r.name, "agent": r.agent} for r in topo.regions],
                      "agents": topo_mod.agent_credentials(topo, h.ensure().root)}
    regions = {str(r["name"]): r for r in deployment.get("regions", [])
               if isinstance(r, dict) and "name" in r}
    if region not in regions:
        raise UsageError(f"no region '{region}' under {h.root} (regions: "
                         f"{', '.join(regions) or 'none; run msgctl up'})")
    address = listen or str(regions[region].get("agent") or "")
    if not address or ":" not in address:
        raise UsageError(f"region {region} names no agent address; pass --listen HOST:PORT")
    h.ensure()
    files = ca_files(h.root)
    creds = deployment.get("agents") or {}
    if creds.get("ca"):  # the CA `up` used (a topology's `tls.ca`, or the home's)
        files = type(files)(Path(str(creds["ca"])).parent)
    try:
        init_ca(files, h.root.name)
        host = address.rsplit(":", 1)[0]
        names = sorted({host, "localhost", "127.0.0.1", "::1"} if host.startswith("127.")
                       else {host})
        cert, key = server_cert(files, f"agent-{region}", names, out_dir=h.root / "tls")
    except (TlsError, OSError, ValueError) as exc:
        raise MsgctlError(f"cannot prepare the agent's certificate: {exc}") from None
    from msgctl.agent import server

    console.print(f"msgctl agent {__version__} for {region} on {address} (Ctrl-C stops it)")
    code = asyncio.run(server.serve(h, region, address, files.ca, cert, key))
    if code:  # the agent said why, in one line
        raise typer.Exit(code)
