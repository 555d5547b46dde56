"""The fault ledger: what is in force in a deployment, in ``<home>/run/chaos.json``.

The supervisor writes it on every change (atomically), so `msgctl chaos status`
reads the truth even while the supervisor is busy, and `msgctl chaos heal` can
undo what is recorded when the supervisor is gone: each entry carries what
undoing it takes (a chain name, toxics, paused process groups).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "chaos.json"
RECENT = 50  # healed and instantaneous faults kept for `chaos status --all`


@dataclass
class Entry:
    id: str
    kind: str
    description: str
    targets: list[str]
    spec: dict[str, Any]
    started: float
    expires: float | None
    undo: dict[str, Any] = field(default_factory=dict)
    healed: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Entry:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})

    def public(self) -> dict[str, Any]:
        """What `chaos status --json` shows: no undo internals."""
        return {"id": self.id, "kind": self.kind, "description": self.description,
                "targets": self.targets, "started": self.started, "expires": self.expires,
                "healed": self.healed, "note": self.note}


@dataclass
class Ledger:
    path: Path
    next_id: int = 1
    faults: list[Entry] = field(default_factory=list)
    recent: list[Entry] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: Path) -> Ledger:
        path = run_dir / FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(path)
        return cls(path, int(raw.get("next_id", 1)),
                   [Entry.from_dict(e) for e in raw.get("faults", [])],
                   [Entry.from_dict(e) for e in raw.get("recent", [])])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next_id": self.next_id,
                                   "faults": [e.to_dict() for e in self.faults],
                                   "recent": [e.to_dict() for e in self.recent[-RECENT:]]},
                                  indent=2))
        os.replace(tmp, self.path)

    def new_id(self) -> str:
        fid = f"f{self.next_id}"
        self.next_id += 1
        return fid

    def find(self, fault_id: str) -> Entry | None:
        return next((e for e in self.faults if e.id == fault_id), None)

    def retire(self, entry: Entry, healed: float, note: str = "") -> None:
        if entry in self.faults:
            self.faults.remove(entry)
        entry.healed = healed
        entry.note = note or entry.note
        self.recent.append(entry)
        self.recent = self.recent[-RECENT:]
