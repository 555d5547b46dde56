"""JVM flags the engines msgctl runs share (Kafka, Cassandra, MirrorMaker 2)."""

from __future__ import annotations

from pathlib import Path

# one line per collection (its kind, heap before/after, pause), five files of 10 MB at most
GC_LOG_FILES, GC_LOG_SIZE = 5, "10m"


def gc_log(logs: Path) -> str:
    """Log every collection to `logs`/gc.log (rotated), as Kafka's and Cassandra's own
    start scripts do: the pauses are what to compare a latency spike with."""
    # quoted: a ':' or ',' in the home's path would otherwise end the file name
    return (f"-Xlog:gc:file=\"{logs / 'gc.log'}\":time,uptime:"
            f"filecount={GC_LOG_FILES},filesize={GC_LOG_SIZE}")
