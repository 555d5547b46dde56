"""`msgctl logs`: the runtimes' and engines' log files merged by time into one prefixed,
coloured view (or JSON lines), filtered by time, level, message and region.

Reading and parsing the files' formats is `msgctl.deploy.logs`."""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from queue import Queue
from typing import Annotated

import typer
from rich.markup import escape

from msgctl.cli.common import HomeOpt, JsonOpt, console, err_console, get_home
from msgctl.deploy import logs as logs_mod
from msgctl.deploy.logs import Filter, Line
from msgctl.errors import MsgctlError, UsageError
from msgctl.home import Home

_PALETTE = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta",
            "bright_green"]
_LEVELS = {"error": "red", "warning": "yellow", "critical": "bold red"}


def _files(logs: Path, pattern: str) -> list[Path]:
    files = sorted(logs.glob("*.log"))
    return [f for f in files if fnmatch.fnmatch(f.stem, pattern)]


def render(name: str, line: str, colour: str, width: int) -> str:
    """One log line: JSON lines get time, level and message; other lines pass as they are."""
    prefix = f"[{colour}]{name:<{width}}[/] | "
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict) or "msg" not in rec:
            raise ValueError
    except ValueError:
        return prefix + escape(line)
    ts = datetime.fromtimestamp(float(rec.get("ts", 0))).strftime("%H:%M:%S.%f")[:-3]
    level = str(rec.get("level", "info"))
    lvl = f"[{_LEVELS[level]}]{level:<5}[/]" if level in _LEVELS else f"{level:<5}"
    text = escape(str(rec["msg"]))
    if rec.get("exc"):
        text += "\n" + escape(str(rec["exc"]))
    return f"{prefix}{ts} {lvl} {text}"


def show(line: Line, colour: str, width: int) -> str:
    """A line as `render` shows it; lines after the first of a JSON record or stamped
    engine line pass as they are."""
    if line.own_time and line.raw.startswith("{") and line.time is not None:
        ts = datetime.fromtimestamp(line.time).strftime("%H:%M:%S.%f")[:-3]
        level = line.level or "info"
        lvl = f"[{_LEVELS[level]}]{level:<5}[/]" if level in _LEVELS else f"{level:<5}"
        return f"[{colour}]{line.log:<{width}}[/] | {ts} {lvl} {escape(line.text)}"
    return f"[{colour}]{line.log:<{width}}[/] | {escape(line.raw)}"


def _filter(h: Home, since: str | None, level: str | None, grep: str | None,
            region: str | None) -> Filter:
    """The options checked (bad ones: one line, exit 2) and made into a `Filter`."""
    out = Filter()
    if since is not None:
        try:
            out.since = logs_mod.since(since)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if level is not None:
        out.level = logs_mod.level_name(level)
        if out.level is None:
            raise UsageError(f"bad --level '{level}': one of {', '.join(logs_mod.LEVELS)} "
                             "(that level and worse are shown)")
    if grep is not None:
        try:
            out.grep = re.compile(grep)
        except re.error as exc:
            raise UsageError(f"bad --grep '{grep}': {exc}") from None
    if region is not None:
        known = _regions(h)
        if region not in known:
            raise UsageError(f"no region '{region}' in {h.root} (regions: "
                             f"{', '.join(known) or 'none'})")
        out.region = region
    return out


def _regions(h: Home) -> list[str]:
    """The deployment's regions, else the ones its log files name."""
    named = [str(r["name"]) for r in (h.deployment() or {}).get("regions", [])
             if isinstance(r, dict) and "name" in r]
    if named:
        return named
    return sorted({f.stem.rsplit(".", 1)[1] for f in h.logs.glob("*.log") if "." in f.stem})


def logs(
    target: Annotated[str, typer.Argument(help="Glob on log names, e.g. 'gateway*'.")] = "*",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
    = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history to show.")] = 50,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only lines from then on: a duration back (10m, 1h30m) or a time "
                        "(2026-12-04T12:00, 12:30).", show_default=False)] = None,
    level: Annotated[str | None, typer.Option(
        "--level", "-l", help="Only lines at this level or worse: debug, info, warning, "
                              "error, critical.", show_default=False)] = None,
    grep: Annotated[str | None, typer.Option(
        "--grep", "-g", help="Only lines whose message matches this regular expression.",
        show_default=False)] = None,
    region: Annotated[str | None, typer.Option(
        "--region", "-r", help="Only the logs of this region.", show_default=False)] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the logs of the runtimes and engines matching TARGET, merged by time."""
    if lines < 0:
        raise UsageError(f"--lines must be 0 or more, not {lines}")
    h = get_home(home)
    keep = _filter(h, since, level, grep, region)
    if not h.logs.is_dir():
        raise UsageError(f"no logs under {h.root} (run 'msgctl up' first)")
    files = [f for f in _files(h.logs, target)
             if keep.region is None or logs_mod.region_of(f.stem) == keep.region]
    if not files:
        names = ", ".join(f.stem for f in sorted(h.logs.glob("*.log"))) or "none"
        where = f" in region {keep.region}" if keep.region else ""
        raise UsageError(f"no log matches '{target}'{where}; there are: {names}")
    colours: dict[str, str] = {}
    width = max(len(f.stem) for f in files)

    def emit(line: Line) -> None:
        nonlocal width
        if json_out:
            print(json.dumps(line.to_json()), flush=True)
            return
        if line.log not in colours:
            colours[line.log] = _PALETTE[len(colours) % len(_PALETTE)]
            width = max(width, len(line.log))
        console.print(show(line, colours[line.log], width), highlight=False)

    from msgctl.agent.transport import agents_of  # grpc loads only where agents are

    try:
        if agents_of(h.deployment()) and h.supervisor_pid() is not None:
            _through_agents(h, target, keep, lines, follow, emit)
        else:
            for line in logs_mod.stream(h.logs, target, keep, lines, follow, _regions(h)):
                emit(line)
    except KeyboardInterrupt:
        pass


def _through_agents(h: Home, target: str, keep: Filter, lines: int, follow: bool,
                    emit: Callable[[Line], None]) -> None:
    """The logs of each region's agent (gRPC Logs.Follow): their last `lines` merged by
    time, then (with `follow`) new lines from every agent as they come. An agent that
    does not answer is a warning while another one does (`--region` aims at one: then
    it is the error)."""
    from msgctl.agent import convert, transport
    from msgctl.v1 import agent_pb2 as pb

    request = pb.FollowRequest(glob=target, lines=min(lines, 2**31 - 1), follow=follow,
                               since=keep.since or 0.0, level=keep.level or "",
                               grep=keep.grep.pattern if keep.grep else "")
    with transport.Agents(h) as agents:
        chosen = ([agents.by_region(keep.region)] if keep.region is not None
                  else agents.list)
        # each agent's stream in a thread of its own, into one queue: (agent, item) where
        # item is a Line, HISTORY_END, DONE or the error that ended the stream
        queue: Queue[tuple[str, object]] = Queue()

        def pump(agent: transport.Agent) -> None:
            try:
                for m in agents.follow(agent, request):
                    queue.put((agent.region, convert.line_from_pb(m) if m.log
                               else _HISTORY_END))
                queue.put((agent.region, _DONE))
            except BaseException as exc:  # noqa: BLE001 (reported by the printing thread)
                queue.put((agent.region, exc))

        for a in chosen:
            threading.Thread(target=pump, args=(a,), daemon=True).start()
        live = {a.region for a in chosen}
        waiting = set(live)  # agents whose history has not fully come
        history: dict[str, list[Line]] = {a.region: [] for a in chosen}
        failures: list[str] = []
        answered: set[str] = set()  # regions whose agent sent lines or ended cleanly

        def ended(region: str, item: object) -> None:
            live.discard(region)
            waiting.discard(region)
            if isinstance(item, BaseException):
                failures.append(str(item))
            else:
                answered.add(region)

        while waiting:
            region, item = queue.get()
            if isinstance(item, Line):
                history[region].append(item)
                answered.add(region)
            elif item is _HISTORY_END:
                waiting.discard(region)
                answered.add(region)
            else:
                ended(region, item)
        # decided once every history is in: which agent's stream ends first is a race
        if failures and not answered:
            raise MsgctlError(failures[0])
        for failure in failures:
            err_console.print(f"msgctl: {failure}", highlight=False)
        merged = list(logs_mod.merge(list(history.values())))
        for line in merged[-lines:] if lines else []:
            emit(line)
        reported = len(failures)
        while follow and live:
            region, item = queue.get()
            if isinstance(item, Line):
                emit(item)
            elif item is not _HISTORY_END:
                ended(region, item)
                if len(failures) > reported and live:  # the others go on
                    reported = len(failures)
                    err_console.print(f"msgctl: {failures[-1]}", highlight=False)
        if follow and len(failures) > reported:
            raise MsgctlError(failures[-1])


_HISTORY_END, _DONE = object(), object()


def register(app: typer.Typer) -> None:
    app.command()(logs)
