"""`msgctl load`: Locust load runs against the running deployment.

`msgctl load run PROFILE` validates the profile, runs Locust headless (one process, or a
master and one worker per core) against one region's gateway, shows progress, and writes
Locust's CSV files plus `summary.json` into the output directory. Exit 1 when any request
failed or per-conversation order was violated. `msgctl load profiles` lists the bundled
profiles. Only gateways on this machine (loopback addresses) are accepted as targets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich import box
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loadtest import PROFILES_DIR
from loadtest import profile as profile_mod
from loadtest.config import RunConfig, new_run_id
from loadtest.report import render, summarize
from loadtest.run import STOP_TIMEOUT_S, LocustRun
from loadtest.shape import Timeline
from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home, write_json_atomic
from msgctl.tls import trust_children

load_app = typer.Typer(help="Generate load with Locust against the running deployment.",
                       no_args_is_help=True)

STARTUP_S = 60.0  # Locust processes starting and workers joining, at most
SHUTDOWN_S = 30.0


def _region(h: Home, name: str | None) -> dict[str, Any]:
    if h.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {h.root} (run 'msgctl up')",
                          EXIT_NOT_RUNNING)
    regions = (h.deployment() or {}).get("regions", [])
    if not regions:
        raise MsgctlError(f"no deployment under {h.root} (run 'msgctl up')", EXIT_NOT_RUNNING)
    if name is None:
        return regions[0]
    for r in regions:
        if r["name"] == name:
            return r
    raise UsageError(f"no region '{name}' in this deployment (regions: "
                     f"{', '.join(r['name'] for r in regions)})")


def _check_target(ws_url: str) -> tuple[str, int]:
    parts = urlsplit(ws_url)
    host = parts.hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        raise UsageError(f"refusing to generate load against {ws_url}: only gateways on this "
                         "machine (loopback addresses) are load targets")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        raise MsgctlError(f"the gateway at {ws_url} does not answer ({exc.strerror or exc}); "
                          "see 'msgctl status'") from None
    return host, port


def _profile(name: str, users: int | None, duration: str | None,
             spawn_rate: float | None) -> tuple[Path, profile_mod.Profile, float | None]:
    path = profile_mod.resolve(name, PROFILES_DIR)
    if not path.exists() and path.parent == PROFILES_DIR:
        bundled = ", ".join(p.stem for p in sorted(PROFILES_DIR.glob("*.yaml")))
        raise UsageError(f"no profile '{name}': not a file, nor a bundled profile ({bundled})")
    try:
        prof = profile_mod.load(path)
    except profile_mod.ProfileError as exc:
        raise UsageError(str(exc)) from None
    seconds = None
    if duration is not None:
        try:
            seconds = profile_mod.parse_duration(duration)
        except ValueError:
            seconds = 0.0
        if seconds <= 0:
            raise UsageError(f"bad --duration '{duration}': use e.g. 30s, 5m, 1m30s")
    if users is not None and users < 1:
        raise UsageError("--users must be at least 1")
    if spawn_rate is not None and spawn_rate <= 0:
        raise UsageError("--spawn-rate must be a positive number")
    return path, prof.with_overrides(users=users, duration=seconds, spawn_rate=spawn_rate), \
        seconds


def run(
    profile: Annotated[str, typer.Argument(
        help="Profile file, or the name of a bundled one (steady, groups, reconnect-storm, "
             "catch-up, presence-churn).")],
    users: Annotated[int | None, typer.Option(
        "--users", "-u", help="Base number of users (stages in % scale with it).")] = None,
    duration: Annotated[str | None, typer.Option(
        "--duration", "-d", help="Run time, e.g. 60s, 5m (default: the profile's).")] = None,
    spawn_rate: Annotated[float | None, typer.Option(
        "--spawn-rate", "-r", help="Users started per second in ramps.")] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help="Region whose gateway to load (default: the first).")] = None,
    home: HomeOpt = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", help="Locust worker processes (default: one per core; 1 runs a "
                                "single process).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output directory (default: <home>/load/<timestamp>).",
        file_okay=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a load profile headless against the deployment; CSV + summary.json, then a table."""
    path, prof, _ = _profile(profile, users, duration, spawn_rate)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise UsageError("--workers must be at least 1")
    h = get_home(home)
    reg = _region(h, region)
    _check_target(reg["ws_url"])
    trust_children(h.deployment() or {})  # locust's workers reach a TLS gateway
    timeline = Timeline(prof)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = (out or h.root / "load" / stamp).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("counters-*.json"):
        stale.unlink()
    cfg = RunConfig(run=new_run_id(), ws_url=reg["ws_url"], region=reg["name"],
                    home=str(h.root), profile=str(path.resolve()), out=str(out_dir),
                    workers=n_workers, users=users, duration=prof.duration if duration else None,
                    spawn_rate=spawn_rate)
    config_path = out_dir / "config.json"
    cfg.write(config_path)
    meta: dict[str, Any] = {
        "profile": prof.to_dict(), "peak_users": timeline.peak, "region": reg["name"],
        "ws_url": reg["ws_url"], "run": cfg.run, "workers": n_workers, "out": str(out_dir),
        "duration_s": prof.duration,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    locust = LocustRun(out_dir, config_path, n_workers)
    t0 = time.monotonic()
    interrupted = False
    deadline = prof.duration + STARTUP_S + SHUTDOWN_S + STOP_TIMEOUT_S
    try:
        locust.start()
        _watch(locust, prof, timeline, n_workers, deadline)
        locust.wait_workers(timeout=15)
    except KeyboardInterrupt:
        interrupted = True
        err_console.print("[yellow]interrupted: stopping Locust…[/]")
        locust.stop(grace=15)
    except MsgctlError as exc:
        meta["problem"] = exc.message
    finally:
        locust.close()
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    rc = locust.master.returncode
    meta["locust_exit"] = rc
    if rc not in (0, 1) and not interrupted and "problem" not in meta:
        meta["problem"] = f"Locust exited {rc}: {locust.last_error()}"
    if interrupted:
        meta["problem"] = "interrupted"
    try:
        summary = summarize(out_dir, meta)
    except (FileNotFoundError, ValueError, KeyError):
        why = meta.get("problem") or f"Locust wrote no statistics (exit {rc}: " \
            f"{locust.last_error()})"
        raise MsgctlError(f"{why}; see {locust.master_log}") from None
    write_json_atomic(out_dir / "summary.json", summary)
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        render(summary, console)
    if interrupted:
        raise typer.Exit(130)
    if not summary["ok"]:
        raise typer.Exit(EXIT_FAILED)


def _watch(locust: LocustRun, prof: profile_mod.Profile, timeline: Timeline, workers: int,
           deadline: float) -> None:
    """Progress until the master exits; past the deadline, stop it and fail."""
    total = prof.duration
    label = f"{prof.name}: {timeline.peak} users, {workers} worker(s)"
    columns = [TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:.0f}/{task.total:.0f}s"), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}")]
    t0 = time.monotonic()
    started: float | None = None
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total, status="starting…")
        while not locust.done():
            now = time.monotonic()
            if now - t0 > deadline:
                locust.stop()
                raise MsgctlError(f"the run did not end within {deadline:.0f}s; stopped it")
            p = locust.progress()
            if p is not None:
                if started is None and (p["users"] or p["requests"]):
                    started = now
                status = (f"{p['users']} users · {p['rps']:.0f} req/s · "
                          f"{p['requests']} requests · "
                          + (f"[red]{p['failures']} failures[/]" if p["failures"]
                             else "0 failures"))
                bar.update(task, completed=min(now - (started or now), total), status=status)
            time.sleep(0.5)


def profiles(json_out: JsonOpt = False) -> None:
    """List the bundled load profiles."""
    rows = []
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        try:
            p = profile_mod.load(path)
        except profile_mod.ProfileError as exc:
            rows.append({"name": path.stem, "path": str(path), "error": str(exc)})
            continue
        kinds = ["1:1"] if p.conversations.mix_direct else []
        if p.conversations.mix_group:
            kinds.append("groups " + "/".join(map(str, p.conversations.groups)))
        behaviour = ("storm" if p.storm else "offline+sync" if p.offline else
                     "churn" if p.churn else "chat")
        rows.append({"name": p.name, "path": str(path), "description": p.description,
                     "users": p.users, "peak_users": Timeline(p).peak,
                     "duration": profile_mod.format_duration(p.duration),
                     "conversations": ", ".join(kinds), "behaviour": behaviour,
                     "shape": " → ".join(s.kind for s in p.shape)})
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    # fits 80 columns: no outer box; the title's path wraps at its space, not inside it
    table = Table(title=f"load profiles in {PROFILES_DIR}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("name", "users", "peak", "duration", "conversations", "behaviour"):
        table.add_column(col, justify="right" if col in ("users", "peak") else "left",
                         no_wrap=col == "name")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "", "", "", "", f"[red]{r['error']}[/]")
        else:
            table.add_row(r["name"], str(r["users"]), str(r["peak_users"]), r["duration"],
                          r["conversations"], r["behaviour"])
    console.print(table)


load_app.command("run")(run)
load_app.command("profiles")(profiles)
