"""The cluster sequencer's per-conversation snapshots (runtime.core.seqsnapshot)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core.seqsnapshot import (
    OFFSETS_KEY,
    SnapshotBook,
    head_key,
    marks_key,
    offsets_value,
    parse_key,
    parse_offsets,
)
from runtime.core.sequencing import SendRequest, SequencerState


def plan_and_commit(state: SequencerState, book: SnapshotBook, conv: str,
                    cids: list[str]) -> dict:
    plan = state.plan([SendRequest(conv, c) for c in cids])
    snaps = book.preview(plan)
    state.commit(plan)
    book.note(plan)
    return snaps


def test_preview_changes_nothing_and_matches_what_note_leaves() -> None:
    state, book = SequencerState(), SnapshotBook(window=4)
    plan_and_commit(state, book, "c", ["a", "b"])
    plan = state.plan([SendRequest("c", "x"), SendRequest("c", "y")])
    preview = book.preview(plan)
    assert preview == book.preview(plan)  # previewing twice: nothing moved in between
    assert preview["c"] == {"head": 4, "recent": [["a", 1, 0], ["b", 2, 1], ["x", 3, 2],
                                                  ["y", 4, 3]]}
    state.commit(plan)
    book.note(plan)
    # what note left is what the preview showed: the next plan's window continues from it
    nxt = state.plan([SendRequest("c", "z")])
    assert book.preview(nxt)["c"] == {"head": 5, "recent": preview["c"]["recent"][1:]
                                      + [["z", 5, 4]]}


def test_window_is_bounded_and_restore_continues_the_chain() -> None:
    state, book = SequencerState(), SnapshotBook(window=3)
    snaps = plan_and_commit(state, book, "c", [f"m{i}" for i in range(10)])
    assert snaps["c"]["head"] == 10 and len(snaps["c"]["recent"]) == 3
    fresh, fresh_book = SequencerState(), SnapshotBook(window=3)
    fresh_book.restore(fresh, "c", snaps["c"])
    # a retry inside the window is a duplicate with its original seq
    again = fresh.plan([SendRequest("c", "m9"), SendRequest("c", "new")])
    assert [(a.seq, a.prev, a.duplicate) for a in again.assignments] == [
        (10, 9, True), (11, 10, False)]
    # older cids are not known: the shell must ask the store (not complete)
    assert not fresh.complete("c")


def test_a_small_conversation_is_complete_after_restore() -> None:
    state, book = SequencerState(), SnapshotBook(window=8)
    snaps = plan_and_commit(state, book, "c", ["a", "b", "c"])
    fresh = SequencerState()
    SnapshotBook(window=8).restore(fresh, "c", snaps["c"])
    assert fresh.complete("c") and fresh.known("c", "b") == (2, 1)


@given(st.text(min_size=1, max_size=20), st.text(max_size=20))
def test_state_keys_round_trip_any_ids(conv: str, user: str) -> None:
    assert parse_key(head_key(conv)) == ("h", conv, None)
    assert parse_key(marks_key(conv, user)) == ("w", conv, user)


@given(st.dictionaries(st.integers(0, 255), st.integers(0, 2**62), max_size=16))
def test_input_offsets_round_trip(positions: dict[int, int]) -> None:
    assert parse_key(OFFSETS_KEY) == ("o", "", None)
    assert parse_offsets(json.loads(offsets_value(positions))) == positions


@pytest.mark.parametrize("snap", [{"0": -1}, {"x": 4}, {"0": "4"}, {"0": 1.5}, {"-1": 3},
                                  {"0": True}])
def test_a_malformed_offsets_record_is_refused(snap: dict) -> None:
    # the sequencer refuses to start on it rather than guess where its input resumes
    with pytest.raises(ValueError):
        parse_offsets(snap)
