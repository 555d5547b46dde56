"""Options and helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from msgctl.home import Home

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
    return Home(home)
