"""The presence flip records exchanged between regions: round trip, and garbage refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.cluster.presence_link import flip_record, read_flip
from runtime.core.presence import PresenceState


def test_round_trip() -> None:
    state = PresenceState("alice", True, 1795963166.437)
    assert read_flip(flip_record("us-east", state)) == state


@pytest.mark.parametrize("raw", [b"[]", b"null", b"{}", b'{"user": 1, "online": true}',
                                 b'{"user": "a", "online": "yes"}',
                                 b'{"user": "a", "online": true, "last_active": "x"}',
                                 b"\xff\xfe", b"not json"])
def test_garbage_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        read_flip(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_flip_or_a_value_error(raw: bytes) -> None:
    try:
        state = read_flip(raw)
    except ValueError:
        return
    assert isinstance(state.user, str) and isinstance(state.online, bool)
