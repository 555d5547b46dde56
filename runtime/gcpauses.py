"""Python's cyclic collector in a runtime process, timed: `msgctl_gc_pause_seconds`.

A collection runs on whichever thread allocated past the threshold and holds the
GIL throughout, so a runtime's event loop (every message of the process goes
through it) waits for its whole length. The JVM engines log their pauses
(`logs/gc.log`); this is the same record for the Python runtimes, which
`benchmarks/cluster_stages.py` lays beside theirs.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from runtime.metrics import METRICS

_GENERATIONS = [METRICS.gc_pause_seconds.labels(str(g)) for g in range(3)]
_started = 0.0


def _timed(phase: str, info: dict[str, Any]) -> None:
    # collections never overlap (each holds the GIL from start to stop), so one start
    # time serves every thread
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        _GENERATIONS[info["generation"]].observe(time.perf_counter() - _started)


def watch() -> None:
    """Time every collection of this process from now on (once, however often called)."""
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)
