"""Pages of history are bounded in bytes: `runtime.core.paging` and its use by the session
machine's `batch` replies and fills."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from runtime.core import frames as f
from runtime.core import paging
from runtime.core import session as sm
from runtime.core.ratelimit import TokenBucket
from runtime.ports import Message


def msg(seq: int, body: str) -> Message:
    return Message("c", seq, seq - 1, f"m{seq}", f"k{seq}", "alice", "phone", 1, "text", body)


bodies = st.lists(st.text(max_size=300), min_size=0, max_size=40)


@given(bodies, st.integers(1, 50), st.integers(200, 5000))
def test_a_page_is_a_prefix_within_the_budget(texts: list[str], limit: int,
                                              budget: int) -> None:
    msgs = [msg(i + 1, t) for i, t in enumerate(texts)]
    wire, more = paging.page(msgs, limit, budget)
    assert [w["seq"] for w in wire] == [m.seq for m in msgs[:len(wire)]]
    assert len(wire) <= limit
    if msgs:
        assert wire  # never an empty page while there is something to send
    if len(wire) > 1:
        assert sum(paging.wire_size(w) for w in wire) <= budget
    # `more` exactly when something read was left out
    assert more == (len(msgs) > len(wire))
    assert paging.fitting(msgs[:limit], budget) == len(wire)


def test_the_frame_size_is_the_bytes_the_gateway_sends() -> None:
    wire = msg(1, "\U0001F600" * 10).to_wire()
    # non-ASCII goes out escaped: 12 bytes an emoji
    assert paging.wire_size(wire) == len(json.dumps(wire, separators=(",", ":")).encode()) + 1
    assert paging.wire_size(wire) > 120


def test_budget_is_a_quarter_of_a_small_send_queue() -> None:
    assert paging.budget(4 * 1024 * 1024) == paging.REPLY_BYTES
    assert paging.budget(512 * 1024) == 128 * 1024


def machine(page_bytes: int) -> sm.SessionMachine:
    m = sm.SessionMachine("bob", "phone", "s1", region="local", heartbeat_ms=30000,
                          limits=f.Limits(max_page_bytes=page_bytes),
                          bucket=TokenBucket(100, 100, 10))
    m.opened({})
    return m


def test_a_sync_batch_of_large_bodies_stops_at_the_budget() -> None:
    m = machine(100_000)
    page = [msg(i, "\u00e9" * 8000) for i in range(1, 102)]  # ~48 KB each once escaped
    (out,) = m.history(sm.ReadHistory("c", 0, 100, "r1"), "c", page)
    assert isinstance(out, sm.Reply)
    assert out.frame["more"] is True
    assert [w["seq"] for w in out.frame["msgs"]] == [1, 2]


def test_a_fill_page_is_cut_and_the_rest_read_after_the_last_sent() -> None:
    m = machine(100_000)
    assert m.resume("c", 10) == [sm.Fill("c", 0)]
    page = [msg(i, "\u00e9" * 8000) for i in range(1, 6)]
    out = m.filled("c", page, page_full=False)
    assert [a.msg.seq for a in out if isinstance(a, sm.Deliver)] == [1, 2]
    assert out[-1] == sm.Fill("c", 2)
    # the next page starts at 3: nothing skipped, nothing twice
    out = m.filled("c", page[2:4], page_full=False)
    assert [a.msg.seq for a in out if isinstance(a, sm.Deliver)] == [3, 4]
