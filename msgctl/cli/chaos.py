"""`msgctl chaos`: inject faults into the running deployment, see them, heal them.

Every fault goes to the deployment's supervisor, which applies it, records it in
the fault ledger and heals it when its duration runs out (even after this
command has exited), on `msgctl chaos heal`, and on `msgctl down`.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from chaos import faults as f
from chaos.host import heal_offline
from chaos.ledger import Ledger
from chaos.units import UnitError, bytes_per_second, seconds, show_seconds
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home
from msgctl.supervisor import client
from msgctl.supervisor.daemon import load_chaos_plan

chaos_app = typer.Typer(
    help="Inject faults into the running deployment: partitions, slow or broken links, "
         "kills, pauses. Each heals by itself when its --duration runs out.",
    no_args_is_help=True)

DurationOpt = Annotated[str, typer.Option(
    "--duration", "-d", help="How long the fault lasts (60s, 2m, 300ms); it heals then.")]
SeedOpt = Annotated[int | None, typer.Option(
    "--seed", help="Seed for the random choice of --one/--minority/--majority.")]
OneOpt = Annotated[bool, typer.Option("--one", help="Only one of the matching programs.")]
MinorityOpt = Annotated[bool, typer.Option(
    "--minority", help="A random minority of the matching programs.")]
MajorityOpt = Annotated[bool, typer.Option(
    "--majority", help="A random majority of the matching programs.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every matching program (the default).")]


def _duration(text: str) -> float:
    try:
        return seconds(text, "--duration")
    except UnitError as exc:
        raise UsageError(str(exc)) from None


def _selector(one: bool, minority: bool, majority: bool, every: bool) -> str:
    chosen = [name for name, on in (("one", one), ("minority", minority),
                                    ("majority", majority), ("all", every)) if on]
    if len(chosen) > 1:
        raise UsageError("choose one of --one, --minority, --majority, --all")
    return chosen[0] if chosen else "all"


def _running(h: Home) -> None:
    if h.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {h.root} (run 'msgctl up')",
                          EXIT_NOT_RUNNING)


def apply(h: Home, spec: f.FaultSpec) -> dict[str, Any]:
    """Check a fault here (bad input: exit 2 before anything changes), then apply it."""
    _running(h)
    plan = load_chaos_plan(h)
    if plan is None:
        raise MsgctlError("this deployment was started by an older msgctl without chaos "
                          "support; run 'msgctl down' and 'msgctl up' again")
    try:
        f.check(spec, plan.regions, multi_region_cluster=plan.multi_region_cluster)
    except f.FaultError as exc:
        raise MsgctlError(str(exc), exc.code) from None
    return client.command(h, "chaos_apply", fault=spec.to_dict())["fault"]


def _report(fault: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print(json.dumps(fault, indent=2))
        return
    until = ""
    if fault.get("expires"):
        left = fault["expires"] - time.time()
        at = time.strftime("%H:%M:%S", time.localtime(fault["expires"]))
        until = f" for {show_seconds(left)} (heals at {at})"
    console.print(f"[bold]{fault['id']}[/] {fault['description']}{until}", highlight=False)


@chaos_app.command()
def partition(
    a: Annotated[str, typer.Argument(help="A region.")],
    b: Annotated[str, typer.Argument(help="Another region.")],
    one_way: Annotated[bool, typer.Option(
        "--one-way", help="Only what A's programs send to B is dropped.")] = False,
    duration: DurationOpt = "60s",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cut every connection between two regions' programs (clients are never cut)."""
    spec = f.FaultSpec(f.PARTITION, [a, b], _duration(duration), {"one_way": one_way})
    _report(apply(get_home(home), spec), json_out)


@chaos_app.command()
def isolate(
    region: Annotated[str, typer.Argument(help="The region to cut off.")],
    duration: DurationOpt = "60s",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cut one region from every other region, both ways."""
    spec = f.FaultSpec(f.ISOLATE, [region], _duration(duration))
    _report(apply(get_home(home), spec), json_out)


@chaos_app.command()
def link(
    a: Annotated[str, typer.Argument(help="A region.")],
    b: Annotated[str, typer.Argument(help="Another region.")],
    latency: Annotated[str | None, typer.Option(
        help="Added to each direction of the link (300ms).")] = None,
    jitter: Annotated[str | None, typer.Option(help="Random ± on the latency (50ms).")] = None,
    bandwidth: Annotated[str | None, typer.Option(
        help="Each direction's rate (256kbit, 1mbit, 64kb).")] = None,
    reset: Annotated[bool, typer.Option(
        "--reset", help="Reset every connection that sends data.")] = False,
    blackhole: Annotated[bool, typer.Option(
        "--blackhole", help="Swallow all data; connections stay open.")] = False,
    duration: DurationOpt = "60s",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Degrade the link between two regions through the link proxy (Toxiproxy)."""
    try:
        options = {
            "latency_ms": round(seconds(latency, "--latency") * 1000) if latency else 0,
            "jitter_ms": round(seconds(jitter, "--jitter") * 1000) if jitter else 0,
            "bandwidth_kbs": max(1, round(bytes_per_second(bandwidth) / 1000))
            if bandwidth else 0,
            "reset": reset, "blackhole": blackhole}
    except UnitError as exc:
        raise UsageError(str(exc)) from None
    spec = f.FaultSpec(f.LINK, [a, b], _duration(duration), options)
    _report(apply(get_home(home), spec), json_out)


def _process(kind: str, glob: str, duration: float | None, select: str, seed: int | None,
             home: HomeOpt, json_out: bool, **options: Any) -> None:
    spec = f.FaultSpec(kind, [glob], duration, {"select": select, "seed": seed, **options})
    _report(apply(get_home(home), spec), json_out)


@chaos_app.command()
def kill(
    glob: Annotated[str, typer.Argument(help="Programs or runtimes: 'sequencer.*', "
                                              "'kafka.eu-west'.")],
    signal_name: Annotated[str, typer.Option(
        "--signal", "-s", help="KILL (a crash), TERM, INT, HUP or a number.")] = "KILL",
    one: OneOpt = False, minority: MinorityOpt = False, majority: MajorityOpt = False,
    every: AllOpt = False, seed: SeedOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a signal to matching programs (the supervisor restarts them, as after a crash)."""
    _process(f.KILL, glob, None, _selector(one, minority, majority, every), seed, home,
             json_out, signal=signal_name)


@chaos_app.command()
def pause(
    glob: Annotated[str, typer.Argument(help="Programs or runtimes, e.g. 'kafka.eu-west'.")],
    duration: DurationOpt = "60s",
    one: OneOpt = False, minority: MinorityOpt = False, majority: MajorityOpt = False,
    every: AllOpt = False, seed: SeedOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Freeze matching programs (SIGSTOP); they resume (SIGCONT) when the fault heals."""
    _process(f.PAUSE, glob, _duration(duration), _selector(one, minority, majority, every),
             seed, home, json_out)


@chaos_app.command()
def stop(
    glob: Annotated[str, typer.Argument(help="Programs or runtimes, e.g. 'cassandra.eu-west'.")],
    duration: DurationOpt = "60s",
    one: OneOpt = False, minority: MinorityOpt = False, majority: MajorityOpt = False,
    every: AllOpt = False, seed: SeedOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop matching programs gracefully; the supervisor starts them again when it heals."""
    _process(f.STOP, glob, _duration(duration), _selector(one, minority, majority, every),
             seed, home, json_out)


def _in_force(h: Home) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    if h.supervisor_pid() is not None:
        try:
            reply = client.command(h, "chaos_list", timeout=10)
            return reply["faults"], {k: reply.get(k) for k in ("network", "link_proxy")}, True
        except MsgctlError:
            pass  # not answering: the ledger says what is recorded
    ledger = Ledger.load(h.run)
    return [e.public() for e in ledger.faults], {}, False


@chaos_app.command()
def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """What is in force now: id, kind, targets, started, expires."""
    h = get_home(home)
    faults, support, running = _in_force(h)
    if json_out:
        print(json.dumps({"home": str(h.root), "running": running, "faults": faults,
                          **support}, indent=2))
        return
    if support:
        console.print(f"network faults: {support.get('network')}; link proxy: "
                      f"{support.get('link_proxy')}", highlight=False)
    if not faults:
        console.print("no fault in force")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("id", "kind", "fault", "started", "heals in"):
        table.add_column(col, overflow="fold")
    now = time.time()
    for fault in faults:
        table.add_row(fault["id"], fault["kind"], fault["description"],
                      time.strftime("%H:%M:%S", time.localtime(fault["started"])),
                      show_seconds(max(0.0, fault["expires"] - now)) if fault["expires"]
                      else "-")
    console.print(table)
    if not running:
        console.print("[yellow]the supervisor is gone; 'msgctl chaos heal' undoes these[/]")


@chaos_app.command()
def heal(
    fault_id: Annotated[str | None, typer.Argument(
        metavar="[ID]", help="The fault to heal (default: every fault).")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Heal one fault or all; exit 0 when nothing is left in force."""
    h = get_home(home)
    if h.supervisor_pid() is not None:
        reply = client.command(h, "chaos_heal", id=fault_id, timeout=60)
        healed, left = reply["healed"], reply["faults"]
    else:
        ledger = Ledger.load(h.run)
        if fault_id is not None and ledger.find(fault_id) is None:
            raise UsageError(f"no fault {fault_id} is in force (see 'msgctl chaos status')")
        plan = load_chaos_plan(h)
        healed = [e.public() for e in heal_offline(ledger, plan, remove_base=True)]
        left = [e.public() for e in ledger.faults]
    if json_out:
        print(json.dumps({"healed": healed, "in_force": left}, indent=2))
    else:
        for fault in healed:
            console.print(f"healed [bold]{fault['id']}[/] {fault['description']}",
                          highlight=False)
        if not healed:
            console.print("nothing was in force")
    if left:
        raise typer.Exit(EXIT_FAILED)
