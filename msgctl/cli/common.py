"""Options and helpers shared by the command modules."""

from __future__ import annotations

import os
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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def get_home(home: Path | None) -> Home:
    """The home a command works on. From here on the command creates files under the
    private umask: whatever it writes into the home (plan, configs, logs, drill journals,
    load results, the fault ledger) is the user's alone (see `msgctl.home`)."""
    os.umask(PRIVATE_UMASK)
    return Home(home)
