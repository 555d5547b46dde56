"""`msgctl logs`: the runtimes' and engines' log files merged by time into one prefixed,
coloured view (or JSON lines), filtered by time, level, message and region.

Reading and parsing the files' formats is `msgctl.deploy.logs`."""

from __future__ import annotations

import fnmatch
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.deploy import logs as logs_mod
from msgctl.deploy.logs import Filter, Line
from msgctl.errors import UsageError
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
    regions = _regions(h)
    colours = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(files)}
    width = max(len(f.stem) for f in files)
    readers: dict[Path, logs_mod.Reader] = {}
    offsets: dict[Path, int] = {}
    history: list[list[Line]] = []
    for f in files:
        try:
            offsets[f] = f.stat().st_size
            # unfiltered, each file's newest `lines` hold the newest of all
            unfiltered = keep.since is None and keep.level is None and keep.grep is None
            read = logs_mod.read(f, regions, tail=lines if unfiltered else None)
        except FileNotFoundError:
            continue
        history.append([x for x in read if keep.keep(x)])
        readers[f] = logs_mod.Reader(f.stem, logs_mod.region_of(f.stem, regions))
        if read:  # a line -f reads next without a stamp continues this one
            readers[f].time, readers[f].level = read[-1].time, read[-1].level
    merged = list(logs_mod.merge(history))

    def emit(line: Line, f: Path) -> None:
        if json_out:
            print(json.dumps(line.to_json()), flush=True)
        else:
            console.print(show(line, colours[f], width), highlight=False)

    by_log = {f.stem: f for f in files}
    for line in merged[-lines:] if lines else []:
        emit(line, by_log[line.log])
    if not follow:
        return
    pending: dict[Path, bytes] = {}
    try:
        while True:
            for f in _files(h.logs, target):
                if keep.region is not None and logs_mod.region_of(f.stem) != keep.region:
                    continue
                if f not in colours:
                    colours[f] = _PALETTE[len(colours) % len(_PALETTE)]
                    offsets[f] = 0
                    width = max(width, len(f.stem))
                if f not in readers:
                    readers[f] = logs_mod.Reader(f.stem, logs_mod.region_of(f.stem, regions))
                try:
                    size = f.stat().st_size
                except FileNotFoundError:
                    continue
                if size < offsets.get(f, 0):
                    offsets[f] = 0  # truncated or replaced
                if size == offsets.get(f, 0):
                    continue
                with f.open("rb") as fh:
                    fh.seek(offsets.get(f, 0))
                    chunk = pending.pop(f, b"") + fh.read()
                    offsets[f] = fh.tell()
                *complete, rest = chunk.split(b"\n")
                if rest:
                    pending[f] = rest
                for raw in complete:
                    text = raw.decode("utf-8", "replace")
                    if not text.strip():
                        continue
                    line = readers[f].line(text)
                    if line.time is None:
                        line.time = time.time()  # a new file's first lines: just written
                    if keep.keep(line):
                        emit(line, f)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command()(logs)
