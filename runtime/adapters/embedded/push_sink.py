"""Push provider of the embedded backend: notifications go to a JSON-lines file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from runtime.ports import PushToken


class LogSinkProvider:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        record = {"ts": int(time.time() * 1000), "platform": token.platform, "user": token.user,
                  "device": token.device, "token": token.token, "payload": payload}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return {"status": "logged", "path": str(self.path)}

    def describe(self) -> str:
        return f"log sink {self.path}"
