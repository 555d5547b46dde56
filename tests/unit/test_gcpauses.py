"""runtime.gcpauses: each collection of the process is timed into its generation."""

from __future__ import annotations

import gc

from runtime import gcpauses
from runtime.metrics import METRICS


def sample(generation: str, suffix: str) -> float:
    value = METRICS.registry.get_sample_value(f"msgctl_gc_pause_seconds_{suffix}",
                                              {"generation": generation})
    return value or 0.0


def test_a_collection_is_timed_once_into_its_generation() -> None:
    gcpauses.watch()
    gcpauses.watch()  # a second call adds nothing
    assert gc.callbacks.count(gcpauses._timed) == 1
    before = {g: sample(g, "count") for g in "012"}
    spent = sample("2", "sum")
    gc.collect(2)
    assert sample("2", "count") == before["2"] + 1
    assert sample("2", "sum") > spent
    gc.collect(0)
    assert sample("0", "count") >= before["0"] + 1
