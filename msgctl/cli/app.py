"""The `msgctl` entry point: the root Typer app and its error handling.

Every expected failure is a `MsgctlError`, printed as one line on stderr with
its exit code (see `msgctl.errors`); nothing the user typed ends in a traceback.
"""

from __future__ import annotations

import json
import os
import sys

import typer

from msgctl import __version__
from msgctl.cli import bench, doctor, lifecycle, logs, token
from msgctl.cli.agent import agent_app
from msgctl.cli.ca import ca_app
from msgctl.cli.chaos import chaos_app
from msgctl.cli.common import HomeOpt, err_console, json_requested
from msgctl.cli.drill import drill_app
from msgctl.cli.infra import infra_app
from msgctl.cli.keys import keys_app
from msgctl.cli.load import load_app
from msgctl.cli.media import media_app
from msgctl.cli.push import push_app
from msgctl.cli.region import region_app
from msgctl.errors import MsgctlError

app = typer.Typer(
    name="msgctl",
    help="Run and operate the msgctl real-time messaging platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # msgctl --install-completion [bash|zsh|fish]
)


def _version(value: bool) -> None:
    if value:
        print(f"msgctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    home: HomeOpt = None,
) -> None:
    """msgctl: launch, supervise and drill a messaging deployment."""
    if home is not None:
        # `msgctl --home DIR status` as well as `msgctl status --home DIR`: every verb
        # reads its --home from MSGCTL_HOME when it is not given after the verb
        os.environ["MSGCTL_HOME"] = str(home)


lifecycle.register(app)
logs.register(app)
token.register(app)
doctor.register(app)
app.add_typer(load_app, name="load")
app.add_typer(infra_app, name="infra")
app.add_typer(push_app, name="push")
app.add_typer(media_app, name="media")
app.add_typer(chaos_app, name="chaos")
app.add_typer(drill_app, name="drill")
app.add_typer(ca_app, name="ca")
app.add_typer(keys_app, name="keys")
app.add_typer(region_app, name="region")
app.add_typer(agent_app, name="agent")
bench.register(app)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[red]msgctl:[/] {message}", highlight=False)
    asked, verb = json_requested()
    if asked:  # a script reading stdout gets an answer it can parse, failures included
        print(json.dumps({"ok": False, "verb": verb, "error": message, "code": code}))
    sys.exit(code)


def main() -> None:
    try:
        app()
    except MsgctlError as exc:
        _fail(exc.message, exc.code)
    except OSError as exc:  # the machine said no (permissions, disk): one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", 1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
