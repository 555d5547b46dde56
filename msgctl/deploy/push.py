"""Push notifications of a deployment, outside its push runtime: the tokens, a test send.

`push_configs` finds the node config hosting each region's push runtime; `tokens`
reads a user's push tokens from the deployment's store (embedded: the region's
SQLite file, read-only; cluster: Cassandra); `send_test` sends `TEST_PAYLOAD` to
each through the provider the deployment is configured with (FCM, APNs or the log
sink), so it proves the credentials and endpoints the push runtime itself uses.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from msgctl.errors import MsgctlError
from msgctl.home import Home
from runtime.config import NodeConfig
from runtime.ports import PushToken

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


def sqlite_tokens(cfg: NodeConfig, user: str) -> list[PushToken]:
    """`user`'s push tokens in an embedded region's SQLite file (none if it has no file)."""
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


async def cassandra_tokens(cfg: NodeConfig, user: str) -> list[PushToken]:
    """`user`'s push tokens in a cluster region's Cassandra."""
    from runtime.adapters.cluster.cassandra_store import CassandraStore

    store = CassandraStore.from_config(cfg.engines, create_schema=False)
    try:
        await store.connect()
        return await store.push_tokens([user])
    finally:
        await store.close()


async def tokens(cfg: NodeConfig, user: str) -> list[PushToken]:
    """`user`'s push tokens in the store of `cfg`'s region, whichever the backend."""
    if cfg.backend == "cluster":
        try:
            return await cassandra_tokens(cfg, user)
        except Exception as exc:
            raise MsgctlError(f"cannot read push tokens from Cassandra "
                              f"({', '.join(cfg.engines.cassandra_hosts)}): {exc}") from None
    return sqlite_tokens(cfg, user)


async def send_test(configs: list[NodeConfig], user: str,
                    device: str | None = None) -> list[dict[str, Any]]:
    """Send `TEST_PAYLOAD` to each of `user`'s devices (only `device` if given): one row per
    token with the provider's answer (``ok``, ``status``, ``answer``, or ``error`` and
    ``invalid_token`` / ``retryable``). An unreachable provider is a row, not an error."""
    from runtime.adapters.push import PushError, build_provider

    rows: list[dict[str, Any]] = []
    for cfg in configs:
        found = [t for t in await tokens(cfg, user) if device is None or t.device == device]
        if not found:
            continue
        try:
            provider = build_provider(cfg.push, Path(cfg.data_dir), cfg.region)
        except (OSError, ValueError) as exc:
            raise MsgctlError(f"{cfg.region}: push provider not usable: {exc}") from None
        try:
            for t in sorted(found, key=lambda t: t.device):
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
