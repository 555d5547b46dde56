"""Making and rotating the deployment's keyring file (its format: `runtime.keyring`).

msgctl writes the keyring (`up` makes it, `msgctl keys rotate` adds a key); the
runtimes only read it. Written like every private file of a home: 0600 from the
first byte, replaced atomically, on disk before the rename.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

from msgctl.home import private_dir, write_private
from runtime.core.sealing import KEY_BYTES
from runtime.keyring import read


def write(path: Path, raw: dict[str, Any]) -> None:
    """Replace the keyring atomically, 0600 (its folder 0700)."""
    private_dir(path.parent)
    write_private(path, json.dumps(raw, indent=2))


def add_key(raw: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The keyring with a new current key (a new keyring when `raw` is None)."""
    out = {"version": 1, "current": "", "keys": dict((raw or {}).get("keys") or {})}
    kid = f"k{secrets.token_hex(4)}"
    while kid in out["keys"]:
        kid = f"k{secrets.token_hex(4)}"
    out["keys"][kid] = {"key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(),
                        "created": int(time.time())}
    out["current"] = kid
    return out, kid


def ensure(path: Path) -> bool:
    """Make a keyring with one key unless there is one; True when made."""
    if path.exists():
        read(path)  # refuse to go on with one that does not parse
        return False
    write(path, add_key(None)[0])
    return True
