"""Options and helpers shared by the command modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from msgctl.home import PRIVATE_UMASK, Home

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="MSGCTL_HOME", show_envvar=True,
                 help="Deployment directory (default: ~/.local/state/msgctl/default).",
                 file_okay=False),
]


class _Json:
    """Whether this run was asked for ``--json``, and by which verb (``infra start``)."""

    requested = False
    verb = ""


def _json_mode(ctx: typer.Context, value: bool) -> bool:
    if value:
        _Json.requested = True
        # the path less the root's name, which is however msgctl was started
        _Json.verb = ctx.command_path.removeprefix(ctx.find_root().command_path).strip()
        # stdout then carries JSON alone: whatever a verb shows people on the way (spinners,
        # notes, progress) goes to stderr, so `msgctl up --json | jq` always parses
        console.file = sys.stderr
    return value


def json_requested() -> tuple[bool, str]:
    """(``--json`` given, the verb it was given to): `msgctl.cli.app` prints failures as a
    JSON object too when it was."""
    return _Json.requested, _Json.verb


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.",
                                       callback=_json_mode)]


def get_home(home: Path | None) -> Home:
    """The home a command works on. From here on the command creates files under the
    private umask: whatever it writes into the home (plan, configs, logs, drill journals,
    load results, the fault ledger) is the user's alone (see `msgctl.home`)."""
    os.umask(PRIVATE_UMASK)
    return Home(home)
