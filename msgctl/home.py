"""The deployment home: where one deployment keeps its state, logs, data and secret.

Default: ``$XDG_STATE_HOME/msgctl/default`` (``~/.local/state/msgctl/default``);
``--home`` or ``MSGCTL_HOME`` choose another, so deployments can run side by side.

A home is private to its user: it holds the JWT secret, engine credentials, every
message (the store, blobs) and the logs. Its directories are 0700 and its files
0600 from the moment they exist: msgctl writes its own files with explicit modes
(`write_private`, `open_private`, `write_json_atomic`) and runs everything that
writes into the home (the supervisor, the programs it spawns, engines' prepare
steps) under `PRIVATE_UMASK`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from msgctl.errors import UsageError

PRIVATE_UMASK = 0o077  # what any process writing into a home runs with
DIR_MODE = 0o700
FILE_MODE = 0o600


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
        """Create the home's folders, private (0700); a home made by an older msgctl, or
        under a loose umask, is tightened: with the root 0700 nothing inside is reachable
        by others, whatever the modes of files written before."""
        for d in (self.root, self.run, self.logs, self.data, self.config):
            try:
                private_dir(d)
            except OSError as exc:
                raise UsageError(f"cannot use {self.root} as a deployment home: "
                                 f"{d} {(exc.strerror or str(exc)).lower()}") from None
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
        private_dir(self.root)  # `msgctl token` may come before `up` made the home
        value = secrets.token_hex(32)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
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


def private_dir(path: Path) -> None:
    """`path` and its missing parents as directories; `path` itself 0700 even if it existed."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Run a block under `PRIVATE_UMASK`: files, folders and sockets it creates (here or
    in children it starts) are the user's alone. The umask is the process's: restored
    after the block."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def open_private(path: Path, mode: str = "ab") -> IO[Any]:
    """Open `path` for writing (append by default), created 0600 if it is new: never a
    moment where it exists readable by others, whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags | os.O_CLOEXEC, FILE_MODE), mode)


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600.

    The temp file is made by `mkstemp` (0600, a fresh unique name in the same folder)
    and renamed over `path`: readers see the old or the new content, and no copy of it,
    complete or not, is ever readable by others. The content is on disk before the
    rename (a key or certificate lost in a crash would lose what it protects). A failed
    write leaves no temp file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as JSON in `path`, atomically and 0600 (see `write_private`)."""
    write_private(path, json.dumps(data, indent=2))
