"""Settings handed from `msgctl load run` to the Locust processes, through the environment.

`msgctl load run` writes `config.json` into the run's output directory and sets
`MSGCTL_LOAD_CONFIG` to its path for the master and every worker. To run Locust by hand
against a running deployment instead, set `MSGCTL_LOAD_PROFILE` (a profile path or name)
and optionally `MSGCTL_HOME`, `MSGCTL_LOAD_REGION`, `MSGCTL_LOAD_OUT` and, when
several Locust processes must agree, `MSGCTL_LOAD_RUN`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest import PROFILES_DIR
from loadtest import profile as profile_mod

CONFIG_ENV = "MSGCTL_LOAD_CONFIG"


@dataclass(frozen=True)
class RunConfig:
    run: str  # short id that keeps this run's users and conversations apart from others
    ws_url: str
    region: str
    home: str
    profile: str  # path of the profile file
    out: str  # where counters and CSV files go
    workers: int = 1
    users: int | None = None  # overrides of the profile
    duration: float | None = None
    spawn_rate: float | None = None

    def load_profile(self) -> profile_mod.Profile:
        return profile_mod.load(self.profile).with_overrides(
            users=self.users, duration=self.duration, spawn_rate=self.spawn_rate)

    @property
    def http_url(self) -> str:
        base = self.ws_url.split("://", 1)
        scheme = "https" if base[0] == "wss" else "http"
        host = base[1].split("/", 1)[0]
        return f"{scheme}://{host}"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> RunConfig:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(**data)


def new_run_id(now: float | None = None) -> str:
    """Short and unique enough per deployment: base-36 milliseconds."""
    n = int((time.time() if now is None else now) * 1000)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def from_env() -> RunConfig:
    path = os.environ.get(CONFIG_ENV)
    if path:
        return RunConfig.read(Path(path))
    name = os.environ.get("MSGCTL_LOAD_PROFILE")
    if not name:
        raise RuntimeError(f"set {CONFIG_ENV} (msgctl load run does) or MSGCTL_LOAD_PROFILE")
    from msgctl.home import Home

    home = Home(Path(os.environ["MSGCTL_HOME"]) if os.environ.get("MSGCTL_HOME") else None)
    regions = (home.deployment() or {}).get("regions", [])
    wanted = os.environ.get("MSGCTL_LOAD_REGION")
    region = next((r for r in regions if not wanted or r["name"] == wanted), None)
    if region is None:
        raise RuntimeError(f"no region {wanted or ''} in the deployment under {home.root}")
    run = os.environ.get("MSGCTL_LOAD_RUN") or new_run_id()
    out = os.environ.get("MSGCTL_LOAD_OUT") or str(home.root / "load" / run)
    Path(out).mkdir(parents=True, exist_ok=True)
    return RunConfig(run=run, ws_url=region["ws_url"], region=region["name"],
                     home=str(home.root),
                     profile=str(profile_mod.resolve(name, PROFILES_DIR)), out=out)
