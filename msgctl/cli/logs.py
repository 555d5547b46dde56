"""`msgctl logs`: the per-runtime log files merged into one prefixed, coloured view."""

from __future__ import annotations

import fnmatch
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from msgctl.cli.common import HomeOpt, console, get_home
from msgctl.errors import UsageError

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


def _stamp(line: str) -> float:
    try:
        return float(json.loads(line).get("ts", 0))
    except (ValueError, AttributeError, TypeError):
        return 0.0


def logs(
    target: Annotated[str, typer.Argument(help="Glob on log names, e.g. 'gateway*'.")] = "*",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
    = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history to show.")] = 50,
    home: HomeOpt = None,
) -> None:
    """Show the logs of the runtimes matching TARGET, merged and prefixed."""
    h = get_home(home)
    if not h.logs.is_dir():
        raise UsageError(f"no logs under {h.root} (run 'msgctl up' first)")
    files = _files(h.logs, target)
    if not files:
        names = ", ".join(f.stem for f in sorted(h.logs.glob("*.log"))) or "none"
        raise UsageError(f"no log matches '{target}'; there are: {names}")
    colours = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(files)}
    width = max(len(f.stem) for f in files)
    history: list[tuple[float, int, Path, str]] = []
    offsets: dict[Path, int] = {}
    for f in files:
        with f.open("rb") as fh:
            data = fh.read()
            offsets[f] = fh.tell()
        for i, raw in enumerate(data.decode("utf-8", "replace").splitlines()[-lines:]):
            history.append((_stamp(raw), i, f, raw))
    history.sort(key=lambda x: (x[0], x[1]))
    for _, _, f, raw in history[-lines:] if lines else []:
        console.print(render(f.stem, raw, colours[f], width), highlight=False)
    if not follow:
        return
    pending: dict[Path, bytes] = {}
    try:
        while True:
            for f in _files(h.logs, target):
                if f not in colours:
                    colours[f] = _PALETTE[len(colours) % len(_PALETTE)]
                    offsets[f] = 0
                    width = max(width, len(f.stem))
                try:
                    size = f.stat().st_size
                except FileNotFoundError:
                    continue
                if size < offsets[f]:
                    offsets[f] = 0  # truncated or replaced
                if size == offsets[f]:
                    continue
                with f.open("rb") as fh:
                    fh.seek(offsets[f])
                    chunk = pending.pop(f, b"") + fh.read()
                    offsets[f] = fh.tell()
                *complete, rest = chunk.split(b"\n")
                if rest:
                    pending[f] = rest
                for raw in complete:
                    console.print(render(f.stem, raw.decode("utf-8", "replace"), colours[f],
                                         width), highlight=False)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command()(logs)
