"""`msgctl token`: dev JWTs signed with the deployment's secret."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from msgctl.cli.common import HomeOpt, JsonOpt, get_home
from msgctl.errors import UsageError
from runtime import auth

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"bad duration '{text}': use e.g. 90s, 30m, 24h, 7d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def token(
    user: Annotated[str, typer.Argument(help="User id (the 'sub' claim).")],
    device: Annotated[str, typer.Argument(help="Device id (the 'did' claim).")] = "default",
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 30m, 24h, 7d.")] = "24h",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a JWT for USER on DEVICE, valid for this deployment."""
    seconds = parse_duration(ttl)  # before anything touches the home
    for name, value in (("user", user), ("device", device)):
        if not 1 <= len(value) <= 128:
            raise UsageError(f"{name} must be 1-128 characters")
    h = get_home(home)
    if not h.secret_file.is_file():
        # making a home (and a secret) here would sign tokens no deployment accepts
        raise UsageError(f"no deployment home at {h.root} (run 'msgctl up' first, or pass "
                         "--home)")
    jwt = auth.issue(h.secret(), user, device, seconds)
    if json_out:
        regions = (h.deployment() or {}).get("regions", [])
        print(json.dumps({"token": jwt, "user": user, "device": device,
                          "ws_url": regions[0]["ws_url"] if regions else None}))
    else:
        print(jwt)


def register(app: typer.Typer) -> None:
    app.command()(token)
