"""`msgctl ca init|show`: the deployment's certificate authority.

The CA signs the certificate every TLS endpoint of the deployment serves (the
gateways' `wss://` and the media endpoint's `https://`; on the cluster family also
the engines' and the runtimes' client certificates), so clients trust one
file: `SSL_CERT_FILE=$(msgctl ca show --json | jq -r .ca)`. `msgctl up` makes
it when a topology turns TLS on; `ca init` makes it ahead of time (or again,
with `--force`, which also retires every certificate the old one signed).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.errors import MsgctlError
from msgctl.tls import TlsError, ca_files, describe, init_ca

ca_app = typer.Typer(help="The deployment's certificate authority (TLS).",
                     no_args_is_help=True)


def _print(info: dict[str, str], json_out: bool, made: bool | None = None) -> None:
    if json_out:
        print(json.dumps(info))
        return
    title = {True: "CA made", False: "CA (already there)", None: "CA"}[made]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for key in ("ca", "client_cert", "client_key", "subject", "sha256", "expires"):
        table.add_row(key, info[key])
    console.print(table)
    console.print(f"Trust it: export SSL_CERT_FILE={info['ca']}")


@ca_app.command("init")
def init(
    force: Annotated[bool, typer.Option(
        "--force", help="Make a new CA even if one exists (clients must trust the new one; "
                        "'msgctl down' then 'msgctl up' so its endpoints and engines get "
                        "new certificates).")
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the deployment's CA and operator client certificate under HOME/tls/."""
    h = get_home(home).ensure()
    files = ca_files(h.root)
    try:
        made = init_ca(files, h.root.name, force=force)
        info = describe(files)
    except TlsError as exc:
        raise MsgctlError(str(exc)) from None
    _print(info, json_out, made)


@ca_app.command("show")
def show(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Print where the CA and the operator client certificate are (--json for scripts)."""
    h = get_home(home)
    files = ca_files(h.root)
    if not files.exists():
        raise MsgctlError(f"no CA under {h.root} (run 'msgctl ca init', or 'msgctl up' with "
                          "TLS on)")
    try:
        info = describe(files)
    except TlsError as exc:
        raise MsgctlError(str(exc)) from None
    _print(info, json_out)
