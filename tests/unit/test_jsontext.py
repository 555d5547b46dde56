"""runtime.core.jsontext: orjson where it agrees with json, json where it does not."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core import jsontext

# JSON values as the runtimes write them: integers within 64 bits, finite floats, any text
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SCALARS = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


@given(VALUES)
def test_what_it_writes_json_reads_as_the_same_value(value: object) -> None:
    assert json.loads(jsontext.dumps(value)) == value
    assert json.loads(jsontext.dumps_text(value)) == value


@given(VALUES)
def test_it_reads_what_json_writes_as_json_does(value: object) -> None:
    text = _compact(value)
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(text.encode()) == json.loads(text)


def test_ascii_output_is_json_compact_output_byte_for_byte() -> None:
    record = {"t": "send", "conv": "c", "seq": 2**63 - 1, "media": None, "ok": True,
              "users": ["a", "b"], "nested": {"x": [1, 2.5, {}]}}
    assert jsontext.dumps(record) == _compact(record).encode()
    assert jsontext.dumps_text(record) == _compact(record)


def test_text_outside_ascii_is_written_as_utf8_not_escaped() -> None:
    assert jsontext.dumps({"body": "caf\u00e9 \u2713"}) == '{"body":"caf\u00e9 \u2713"}'.encode()
    assert jsontext.dumps_text({"body": "\U0001f600"}) == '{"body":"\U0001f600"}'


@pytest.mark.parametrize("value", [
    {"big": 2**64},                 # beyond 64 bits
    {"neg": -(2**63) - 1},
    {"body": "\ud800"},             # a lone surrogate: no UTF-8 for it
    {1: "a key that is not text"},
    json.loads("[" * 300 + "]" * 300),  # nested past what orjson writes
])
def test_what_orjson_refuses_to_write_is_written_as_json_writes_it(value: object) -> None:
    assert jsontext.dumps(value) == _compact(value).encode()
    assert jsontext.dumps_text(value) == _compact(value)


@pytest.mark.parametrize("raw", [
    '{"seq":NaN}', '{"seq":Infinity}', '{"seq":-Infinity}', '{"seq":1e400}',
    '{"body":"\\ud800"}',
])
def test_what_orjson_refuses_to_read_is_read_as_json_reads_it(raw: str) -> None:
    ours, theirs = jsontext.loads(raw), json.loads(raw)
    if isinstance(theirs, dict) and isinstance(theirs.get("seq"), float) \
            and math.isnan(theirs["seq"]):
        assert math.isnan(ours["seq"])
    else:
        assert ours == theirs


def test_nesting_past_what_either_reads_is_json_s_recursion_error() -> None:
    # as json.loads: the envelopes take RecursionError for "nested too deeply"
    with pytest.raises(RecursionError):
        jsontext.loads("[" * 2000 + "]" * 2000)


def test_an_integer_beyond_64_bits_is_read_as_a_float() -> None:
    # the one difference left, written down: every reader checks that a number is an int
    assert jsontext.loads("18446744073709551616") == float(2**64)
    assert isinstance(jsontext.loads("18446744073709551615"), int)


@pytest.mark.parametrize("raw", ["", "{", "nope", b"\xff\xfe", '{"a":1,}'])
def test_what_is_not_json_is_a_value_error(raw: str | bytes) -> None:
    with pytest.raises(ValueError):
        jsontext.loads(raw)


def test_the_client_library_reads_frames_orjson_refuses() -> None:
    # a gateway's error message quotes what it refused, a lone surrogate included
    # (written escaped); a client reading frames with orjson alone lost its connection
    from msgctl import wire

    frame = json.dumps({"t": "error", "code": "bad_frame", "message": "unknown '\ud800'"})
    assert wire.decode(frame) == json.loads(frame)
    assert wire.decode(frame.encode()) == json.loads(frame)
