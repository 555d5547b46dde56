"""The protocol v1 test client: `msgctl.wire.Client` over a real WebSocket connection.

A reader task files every server frame; tests wait for the frames they expect
with a predicate and a timeout, and can assert on everything that arrived. The
client itself lives in msgctl/wire.py (shared with the benchmark driver, the load
user, the chaos devices and `msgctl media`); this module keeps the tests' names.
"""

from __future__ import annotations

from msgctl.wire import Client, Frame

__all__ = ["Client", "Frame", "assert_chain"]


def assert_chain(frames: list[Frame], start_prev: int = 0) -> None:
    """In seq order, every prev the seq before it: no gap, no duplicate."""
    prev = start_prev
    for f in frames:
        assert f["prev"] == prev, (f, prev)
        assert f["seq"] > prev
        prev = f["seq"]
