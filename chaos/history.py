"""A drill's history: everything the clients did and saw, one JSON object per line.

Each record has ``kind`` and ``t`` (seconds since the drill started). In the
manner of Jepsen, a client operation is an ``invoke`` followed by ``ok``
(it happened), ``fail`` (it certainly did not) or ``info`` (unknown: a timeout,
``unavailable``, a dropped connection); a retry is a new invoke with the same cid.

==========  =====================================================================
kind        fields
==========  =====================================================================
send        type (invoke|ok|fail|info), process ("user/device"), region (of the
            gateway used), conv, cid, attempt; ok: seq, prev; fail/info: error
deliver     process, region, conn (the device's connection number), conv, seq,
            prev, cid, from ("user/device")
conn        type (open|close), process, region, conn; open: gateway (URL);
            close: reason
conv        conv, home, members (a conversation the drill created)
nemesis     type (start|stop), id, fault (what was done)
read        region, conv, msgs ([{seq, prev, cid, from}] in seq order), error
lag         source, target, lag_ms, stalled
phase       name (steady, traffic, heal, converge, ...); converged: seconds
==========  =====================================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Record = dict[str, Any]


class History:
    """An append-only history with a shared clock; written to disk as it grows."""

    def __init__(self, path: Path | None = None) -> None:
        self.t0 = time.monotonic()
        self.records: list[Record] = []
        self._file = path.open("w") if path is not None else None

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def add(self, kind: str, **fields: Any) -> Record:
        record = {"kind": kind, "t": self.now(), **fields}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        return record

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def of(self, kind: str) -> Iterator[Record]:
        return (r for r in self.records if r["kind"] == kind)


def load(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dump(records: Iterable[Record], path: Path) -> None:
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
