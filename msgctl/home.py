"""The deployment home: where one deployment keeps its state, logs, data and secret.

Default: ``$XDG_STATE_HOME/msgctl/default`` (``~/.local/state/msgctl/default``);
``--home`` or ``MSGCTL_HOME`` choose another, so deployments can run side by side.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from msgctl.errors import UsageError


def default_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "msgctl" / "default"


class Home:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_home()).expanduser().resolve()
        self.run = self.root / "run"
        self.logs = self.root / "logs"
        self.data = self.root / "data"
        self.config = self.root / "config"

    def ensure(self) -> Home:
        for d in (self.root, self.run, self.logs, self.data, self.config):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot use {self.root} as a deployment home: "
                                 f"{d} {exc.strerror.lower()}") from None
        return self

    @property
    def dirs(self) -> dict[str, Path]:
        return {"run": self.run, "logs": self.logs, "data": self.data, "config": self.config}

    # -- files ------------------------------------------------------------
    @property
    def secret_file(self) -> Path:
        return self.root / "secret"

    @property
    def state_file(self) -> Path:
        return self.run / "state.json"

    @property
    def plan_file(self) -> Path:
        return self.run / "plan.json"

    @property
    def pid_file(self) -> Path:
        return self.run / "supervisor.pid"

    @property
    def socket_file(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def deployment_file(self) -> Path:
        return self.root / "deployment.json"

    def secret(self) -> str:
        """The deployment's JWT secret, generated on first use and kept."""
        if self.secret_file.is_file():
            return self.secret_file.read_text().strip()
        self.root.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value

    def deployment(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.deployment_file.read_text())
        except (OSError, ValueError):
            return None

    def supervisor_pid(self) -> int | None:
        """The live supervisor's pid, or None (a stale pid file counts as none)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        if _zombie(pid):  # killed, and nobody reaped it yet
            return None
        return pid


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
