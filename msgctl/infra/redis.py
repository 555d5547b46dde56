"""Redis from the OS package (``redis-server`` on PATH), in the foreground under the supervisor.

With engine security (msgctl.infra.security) it serves TLS only, wants a client
certificate, and knows only the users of its ACL file (`default` is off).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from msgctl.errors import MsgctlError
from msgctl.home import write_private


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


# a runtime touches the session and route hashes and the delivery and presence channels;
# nothing that reads the server's state or config, or runs code
RUNTIME_ACL = "~sessions:* ~route:* &* +@all -@dangerous -@admin -@scripting"


def write_acl(conf: Path, users: dict[str, str], admin: str) -> Path:
    """users.acl: `default` off, each user (name -> password) with the runtime rights and
    `admin` with every right; passwords only as SHA-256 (the file holds no secret)."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for name, password in users.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        rights = "~* &* +@all" if name == admin else RUNTIME_ACL
        lines.append(f"user {name} on #{digest} {rights}")
    path = conf / "users.acl"
    write_private(path, "\n".join(lines) + "\n")
    return path


def argv(path: str, host: str, port: int, data: Path,
         tls: tuple[Path, Path, Path] | None = None, acl: Path | None = None) -> list[str]:
    """`tls` = (certificate, key, CA): TLS only (the plain port off), clients must present a
    certificate the CA signed; `acl`: the users file."""
    data.mkdir(parents=True, exist_ok=True)
    # no RDB snapshots; the append-only file keeps sessions across a restart
    out = [path, "--bind", host, "--dir", str(data), "--daemonize", "no", "--save", "",
           "--appendonly", "yes", "--logfile", ""]
    if tls is None:
        out += ["--port", str(port)]
    else:
        cert, key, ca = tls
        out += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "yes", "--tls-protocols", "TLSv1.2 TLSv1.3"]
    if acl is not None:
        out += ["--aclfile", str(acl)]
    return out
