"""`msgctl push test USER`: a test notification to a user's devices, and the providers' answers.

The work is in `msgctl.deploy.push`: it reads the user's push tokens from the
deployment's store (embedded: the region's SQLite file; cluster: Cassandra) and
sends through the provider the deployment is configured with (FCM, APNs or the
log sink), so it proves the credentials and endpoints the push runtime itself
uses. This module parses the arguments and prints the answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.deploy.push import TEST_PAYLOAD, push_configs, send_test
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError

__all__ = ["TEST_PAYLOAD", "push_app", "push_configs", "test"]

push_app = typer.Typer(help="Push notifications: try a user's devices.", no_args_is_help=True)


def _answer_text(answer: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in answer.items() if k not in ("status",) and v)


@push_app.command("test")
def test(
    user: Annotated[str, typer.Argument(help="User whose registered devices get the test.")],
    device: Annotated[str | None, typer.Option("--device", "-d",
                                               help="Only this device.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a test notification to USER's devices and print each provider's answer."""
    h = get_home(home)
    if not h.deployment():
        raise MsgctlError(f"no deployment under {h.root} (run 'msgctl up')", EXIT_NOT_RUNNING)
    configs = push_configs(h)
    if not configs:
        raise UsageError(f"no push runtime in the deployment under {h.root}")
    rows = asyncio.run(send_test(configs, user, device))
    if not rows:
        which = f"device '{device}' of " if device else ""
        raise MsgctlError(f"{which}user '{user}' has no registered push token "
                          "(a client sends push_register)")
    if json_out:
        print(json.dumps({"user": user, "results": rows}, indent=2))
    else:
        table = Table(title=f"push test — {user}", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("region", "device", "platform", "provider", "result", "answer"):
            table.add_column(col, overflow="fold")
        for r in rows:
            result = f"[green]{r['status']}[/]" if r["ok"] else \
                f"[red]{r['status'] or 'error'} {r['error']}[/]"
            detail = _answer_text(r["answer"]) if isinstance(r.get("answer"), dict) else \
                str(r.get("answer") or "")
            if r.get("invalid_token"):
                detail = (detail + "; " if detail else "") + "token invalid: the push runtime " \
                    "drops it at the next message"
            table.add_row(r["region"], r["device"], r["platform"], r["provider"], result, detail)
        console.print(table)
    if not all(r["ok"] for r in rows):
        raise typer.Exit(EXIT_FAILED)
