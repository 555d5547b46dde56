"""Keep a long-running msgctl process (a runtime, the supervisor) small.

The Cassandra driver imports NumPy whenever it is installed, for an optional row
parser that msgctl never asks for; matplotlib (drill timelines) puts NumPy in the
same environment. Loading it costs each process about 12 MiB, six processes a
region. `skip_numpy` makes that import fail, so the driver goes without.
"""

from __future__ import annotations

import sys


def skip_numpy() -> None:
    """Make ``import numpy`` fail in this process (call it before the drivers load; a
    NumPy already loaded stays)."""
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
