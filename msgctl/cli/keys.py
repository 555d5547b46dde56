"""`msgctl keys list|rotate`: the keys message bodies are sealed with at rest.

The keyring is `<home>/keys/keyring.json` (0600); `msgctl up` makes it when the
topology's `encryption` is on. `rotate` adds a key and makes it current: the
gateways seal new sends under it within a second (they re-read the file when it
changes; no restart, no client notices), and every record sealed before still
opens under its own key, which stays in the keyring.
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich import box
from rich.table import Table

from msgctl import keyring_file
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.errors import MsgctlError
from msgctl.topology import keyring_path
from runtime import keyring

keys_app = typer.Typer(help="The keys message bodies are sealed with (AES-256-GCM).",
                       no_args_is_help=True)


def _rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": kid, "current": kid == raw.get("current"),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                      time.gmtime(int(entry.get("created", 0))))}
            for kid, entry in sorted(raw["keys"].items(),
                                     key=lambda kv: int(kv[1].get("created", 0)))]


def _read(path: Any) -> dict[str, Any]:
    if not path.exists():
        raise MsgctlError(f"no keyring at {path} (made by 'msgctl up' with encryption on)")
    try:
        return keyring.read(path)
    except keyring.KeyringError as exc:
        raise MsgctlError(str(exc)) from None


def _print(rows: list[dict[str, Any]], path: Any, json_out: bool) -> None:
    if json_out:
        print(json.dumps({"keyring": str(path), "keys": rows}))
        return
    table = Table(title=f"keyring {path}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("id", "current", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], "yes" if r["current"] else "", r["created"])
    console.print(table)


@keys_app.command("list")
def list_keys(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The keys, oldest first, and which one seals new messages (never the key bytes)."""
    path = keyring_path(get_home(home).root)
    _print(_rows(_read(path)), path, json_out)


@keys_app.command("rotate")
def rotate(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Add a key and make it current; older keys stay to open what they sealed."""
    path = keyring_path(get_home(home).root)
    raw, kid = keyring_file.add_key(_read(path))
    keyring_file.write(path, raw)
    if not json_out:
        console.print(f"new current key {kid}; the gateways seal with it within a second")
    _print(_rows(raw), path, json_out)
