"""Which of the matching targets a process fault hits, in the manner of Jepsen's selectors.

``one`` picks a single target, ``majority`` more than half, ``minority`` one fewer than a
majority (none of one), ``all`` every one. The choice is random but repeatable with a seed, so a
drill (or an operator) can replay exactly the same faults.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

MODES = ("one", "minority", "majority", "all")


def count(mode: str, n: int) -> int:
    """How many of `n` targets a mode picks (minority of 1 is none: nothing to pick)."""
    if mode not in MODES:
        raise ValueError(f"unknown selector '{mode}'; use one of {', '.join(MODES)}")
    if n <= 0:
        return 0
    return {"one": 1, "minority": n // 2, "majority": n // 2 + 1,
            "all": n}[mode]


def pick(targets: Sequence[str], mode: str = "all", seed: int | None = None) -> list[str]:
    """The targets a mode selects, in the order given (the same seed, the same choice)."""
    k = count(mode, len(targets))
    if k >= len(targets):
        return list(targets)
    chosen = set(random.Random(seed).sample(list(targets), k))
    return [t for t in targets if t in chosen]
