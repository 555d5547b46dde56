"""Redis from the OS package (``redis-server`` on PATH), in the foreground under the supervisor."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from msgctl.errors import MsgctlError


def binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise MsgctlError("redis-server is not on PATH; install it (apt-get install "
                          "redis-server), or point the topology at a running Redis with "
                          "'external:'")
    return path


def version(path: str | None = None) -> str:
    """The installed redis-server's version, e.g. 7.0.15."""
    try:
        out = subprocess.run([path or binary(), "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else "unknown"


def argv(path: str, host: str, port: int, data: Path) -> list[str]:
    data.mkdir(parents=True, exist_ok=True)
    # no RDB snapshots; the append-only file keeps sessions across a restart
    return [path, "--port", str(port), "--bind", host, "--dir", str(data),
            "--daemonize", "no", "--save", "", "--appendonly", "yes", "--logfile", ""]
