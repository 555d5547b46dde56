"""`msgctl push test USER`: a test notification to a user's devices, and the providers' answers.

It reads the user's push tokens from the deployment's store (embedded: the
region's SQLite file; cluster: Cassandra) and sends through the provider the
deployment is configured with (its node config: FCM, APNs or the log sink), so
it proves the credentials and endpoints the push runtime itself uses.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.home import Home
from runtime.config import NodeConfig
from runtime.ports import PushToken

push_app = typer.Typer(help="Push notifications: try a user's devices.", no_args_is_help=True)

TEST_PAYLOAD = {"collapse_key": "msgctl-test", "conv": "msgctl-test", "seq": 0,
                "from": "msgctl", "kind": "test", "title": "msgctl test notification",
                "body": "If you can read this, push works."}


def push_configs(h: Home) -> list[NodeConfig]:
    """One node config per region: the one hosting its push runtime."""
    out: dict[str, NodeConfig] = {}
    for path in sorted(h.config.glob("*.json")):
        try:
            cfg = NodeConfig.load(path)
        except (ValueError, TypeError, KeyError):
            continue
        if "push" in cfg.runtimes:
            out.setdefault(cfg.region, cfg)
    return list(out.values())


def _sqlite_tokens(cfg: NodeConfig, user: str) -> list[PushToken]:
    path = Path(cfg.data_dir) / f"{cfg.region}.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT user, device, platform, token FROM push_tokens "
                            "WHERE user = ?", (user,)).fetchall()
    except sqlite3.Error as exc:
        raise MsgctlError(f"cannot read push tokens from {path}: {exc}") from None
    finally:
        conn.close()
    return [PushToken(*r) for r in rows]


async def _cassandra_tokens(cfg: NodeConfig, user: str) -> list[PushToken]:
    from runtime.adapters.cluster.cassandra_store import CassandraStore

    store = CassandraStore.from_config(cfg.engines, create_schema=False)
    try:
        await store.connect()
        return await store.push_tokens([user])
    finally:
        await store.close()


def _answer_text(answer: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in answer.items() if k not in ("status",) and v)


async def _send_all(configs: list[NodeConfig], user: str,
                    device: str | None) -> list[dict[str, Any]]:
    from runtime.adapters.push import PushError, build_provider

    rows: list[dict[str, Any]] = []
    for cfg in configs:
        if cfg.backend == "cluster":
            try:
                tokens = await _cassandra_tokens(cfg, user)
            except Exception as exc:
                raise MsgctlError(f"cannot read push tokens from Cassandra "
                                  f"({', '.join(cfg.engines.cassandra_hosts)}): {exc}") from None
        else:
            tokens = _sqlite_tokens(cfg, user)
        tokens = [t for t in tokens if device is None or t.device == device]
        if not tokens:
            continue
        try:
            provider = build_provider(cfg.push, Path(cfg.data_dir), cfg.region)
        except (OSError, ValueError) as exc:
            raise MsgctlError(f"{cfg.region}: push provider not usable: {exc}") from None
        try:
            for t in sorted(tokens, key=lambda t: t.device):
                p = provider.provider_for(t.platform)
                row: dict[str, Any] = {"region": cfg.region, "device": t.device,
                                       "platform": t.platform,
                                       "provider": getattr(p, "platform", "log"),
                                       "token": t.token}
                try:
                    answer = await p.send(t, dict(TEST_PAYLOAD))
                    row.update(ok=True, status=answer.get("status"), answer=answer)
                except PushError as exc:
                    row.update(ok=False, status=exc.status or None, error=exc.reason,
                               invalid_token=exc.invalid_token, retryable=exc.retryable,
                               answer=exc.answer)
                except Exception as exc:  # the provider is unreachable: say so, go on
                    row.update(ok=False, status=None, error=f"{type(exc).__name__}: {exc}",
                               answer=None)
                rows.append(row)
        finally:
            await provider.aclose()
    return rows


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
    rows = asyncio.run(_send_all(configs, user, device))
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
