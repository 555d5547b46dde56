"""Fuzz and round-trip properties of `parse_client_frame`: it never raises."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.core.errors import BAD_FRAME, TOO_LARGE
from runtime.core.frames import (
    KINDS,
    MAX_CID_LEN,
    MAX_CONV_LEN,
    MAX_ID_LEN,
    MAX_MEMBERS,
    MAX_SEQ,
    MAX_SYNC_LIMIT,
    MAX_USER_LEN,
    MAX_WATCH,
    PLATFORMS,
    Ack,
    Create,
    FrameError,
    Limits,
    Ping,
    PushRegister,
    PushUnregister,
    Read,
    Send,
    Sync,
    Typing,
    Upload,
    Watch,
    parse_client_frame,
)

FRAME_TYPES = (Create, Send, Ack, Read, Sync, Watch, Typing, PushRegister, PushUnregister,
               Upload, Ping)
CODES = {BAD_FRAME, TOO_LARGE}
T_VALUES = ["create", "send", "ack", "read", "sync", "watch", "typing", "push_register",
            "push_unregister", "upload", "ping"]
FIELDS = ["id", "members", "title", "conv", "cid", "kind", "body", "media", "seq", "after",
          "limit", "users", "platform", "token", "content_type", "size"]

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# text that includes lone surrogates (category Cs) on purpose
any_text = st.text(alphabet=st.characters(codec=None), max_size=40)
scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.sampled_from([0, 1, -1, MAX_SEQ, MAX_SEQ + 1, 2**40, 2**40 + 1, 1000, 1001])
           | st.floats(allow_nan=True, allow_infinity=True)
           | any_text
           | st.sampled_from(sorted(KINDS) + sorted(PLATFORMS) + T_VALUES))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(FIELDS + ["t"]) | any_text, children, max_size=5),
    max_leaves=8,
)

# field values: every JSON type, kept shallow so that many frames fit in the budget
field_values = (scalars | st.lists(scalars, max_size=3)
                | st.dictionaries(any_text, scalars, max_size=3))
# plausible values too, so that a good share of the frames is valid and checked
GOOD: dict[str, list[Any]] = {
    "id": ["r1", ""], "members": [["a", "b"], []], "title": ["x", ""], "conv": ["c1"],
    "cid": ["m1"], "kind": ["text", "file"], "body": ["hi", ""], "media": [{"key": "k"}],
    "seq": [0, 5, MAX_SEQ], "after": [0, 3], "limit": [1, 100, MAX_SYNC_LIMIT],
    "users": [["a"], []], "platform": ["fcm", "apns"], "token": ["tok"],
    "content_type": ["image/png"], "size": [1, 2**40],
}


def good_or_any(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # half and half (a plain `|` would flatten into the many branches of field_values)
    return st.booleans().flatmap(lambda pick_good: good if pick_good else field_values)


frame_dicts = st.fixed_dictionaries(
    {"t": good_or_any(st.sampled_from(T_VALUES))},
    optional={name: good_or_any(st.sampled_from(GOOD[name])) for name in FIELDS},
)

limits_st = st.builds(Limits, max_frame_bytes=st.integers(1, 4096),
                      max_body_bytes=st.integers(0, 256)) | st.just(Limits())


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_result(result: Any, limits: Limits) -> None:
    """Every result is a frame or an error; a frame satisfies the protocol's rules."""
    if isinstance(result, FrameError):
        assert result.code in CODES, result
        assert isinstance(result.message, str) and result.message
        assert result.id is None or (isinstance(result.id, str) and len(result.id) <= MAX_ID_LEN)
        return
    assert isinstance(result, FRAME_TYPES), result
    assert result.id is None or (isinstance(result.id, str) and len(result.id) <= MAX_ID_LEN)

    def conv_ok(conv: Any) -> bool:
        return isinstance(conv, str) and 1 <= len(conv) <= MAX_CONV_LEN and utf8_ok(conv)

    def seq_ok(seq: Any, lo: int = 0, hi: int = MAX_SEQ) -> bool:
        return type(seq) is int and lo <= seq <= hi

    def users_ok(users: Any, max_items: int) -> bool:
        return (isinstance(users, tuple) and len(users) <= max_items
                and len(set(users)) == len(users)
                and all(isinstance(u, str) and 1 <= len(u) <= MAX_USER_LEN and utf8_ok(u)
                        for u in users))

    if isinstance(result, Send):
        assert conv_ok(result.conv)
        assert isinstance(result.cid, str) and 1 <= len(result.cid) <= MAX_CID_LEN
        assert utf8_ok(result.cid)
        assert result.kind in KINDS
        assert isinstance(result.body, str) and utf8_ok(result.body)
        assert len(result.body.encode()) <= limits.max_body_bytes
        assert result.media is None or isinstance(result.media, dict)
    elif isinstance(result, (Ack, Read)):
        assert conv_ok(result.conv)
        assert seq_ok(result.seq)
    elif isinstance(result, Sync):
        assert result.conv is None or conv_ok(result.conv)
        assert seq_ok(result.after)
        assert seq_ok(result.limit, 1, MAX_SYNC_LIMIT)
    elif isinstance(result, Create):
        assert users_ok(result.members, MAX_MEMBERS)
        assert result.title is None or (isinstance(result.title, str) and utf8_ok(result.title))
        assert result.conv is None or conv_ok(result.conv)
    elif isinstance(result, Watch):
        assert users_ok(result.users, MAX_WATCH)
    elif isinstance(result, Typing):
        assert conv_ok(result.conv)
    elif isinstance(result, PushRegister):
        assert result.platform in PLATFORMS
        assert isinstance(result.token, str) and result.token and utf8_ok(result.token)
    elif isinstance(result, Upload):
        assert result.kind in KINDS
        assert isinstance(result.content_type, str) and result.content_type
        assert utf8_ok(result.content_type)
        assert seq_ok(result.size, 1, 2**40)


@FUZZ
@given(st.text(alphabet=st.characters(codec=None)), limits_st)
def test_arbitrary_text_never_raises(raw, limits):
    check_result(parse_client_frame(raw, limits), limits)


@FUZZ
@given(st.binary(max_size=300), limits_st)
def test_arbitrary_bytes_is_always_an_error(raw, limits):
    result = parse_client_frame(raw, limits)
    assert isinstance(result, FrameError)
    expected = TOO_LARGE if len(raw) > limits.max_frame_bytes else BAD_FRAME
    assert result.code == expected
    assert result.id is None


@FUZZ
@given(json_values, st.booleans())
def test_arbitrary_json_values_never_raise(value, ascii_only):
    raw = dumps(value, ascii_only)
    result = parse_client_frame(raw)
    check_result(result, Limits())
    if not isinstance(value, dict):
        assert isinstance(result, FrameError) and result.code == BAD_FRAME


@FUZZ
@given(frame_dicts, st.booleans(), limits_st)
def test_frame_shaped_objects_never_raise_and_frames_are_valid(frame, ascii_only, limits):
    raw = dumps(frame, ascii_only)
    result = parse_client_frame(raw, limits)
    check_result(result, limits)
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > limits.max_frame_bytes:
        assert result == FrameError(TOO_LARGE, result.message)
    elif isinstance(result, FrameError):
        fid = frame.get("id")
        if isinstance(fid, str) and len(fid) <= MAX_ID_LEN:
            assert result.id == fid, "a frame with a valid id gets it back in its error"
    else:
        assert result.id == frame.get("id")


@FUZZ
@given(st.text(alphabet=st.characters(codec=None), max_size=200),
       st.sampled_from(["", "{", '{"t":', '{"t":"send","body":"', "[", '"']))
def test_truncated_and_prefixed_json_never_raises(tail, head):
    check_result(parse_client_frame(head + tail), Limits())


# -- round trips ----------------------------------------------------------------------------------

clean_text = st.characters(codec="utf-8")  # no lone surrogates
conv_st = st.text(clean_text, min_size=1, max_size=MAX_CONV_LEN)
id_st = st.none() | st.text(clean_text, max_size=MAX_ID_LEN)
media_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(clean_text, max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(clean_text, max_size=10), c,
                                                         max_size=4),
    max_leaves=10,
)


@st.composite
def send_frames(draw):
    frame = {
        "t": "send",
        "conv": draw(conv_st),
        "cid": draw(st.text(clean_text, min_size=1, max_size=MAX_CID_LEN)),
        "kind": draw(st.sampled_from(sorted(KINDS))),
        "body": draw(st.text(clean_text, max_size=300)),
    }
    media = draw(st.none() | st.dictionaries(st.text(clean_text, max_size=10), media_values,
                                             max_size=5))
    if media is not None or draw(st.booleans()):
        frame["media"] = media
    fid = draw(id_st)
    if fid is not None or draw(st.booleans()):
        frame["id"] = fid
    # extra unknown fields are ignored
    if draw(st.booleans()):
        frame["x-extra"] = draw(media_values)
    return frame


@FUZZ
@given(send_frames(), st.booleans())
def test_valid_send_round_trips(frame, ascii_only):
    result = parse_client_frame(dumps(frame, ascii_only))
    assert result == Send(conv=frame["conv"], cid=frame["cid"], kind=frame["kind"],
                          body=frame["body"], media=frame.get("media"), id=frame.get("id"))


@FUZZ
@given(send_frames(), st.integers(0, 4000))
def test_send_body_limit_is_exact(frame, max_body):
    limits = Limits(max_body_bytes=max_body)
    result = parse_client_frame(json.dumps(frame), limits)
    if len(frame["body"].encode()) > max_body:
        assert isinstance(result, FrameError) and result.code == TOO_LARGE
        assert result.id == frame.get("id")
    else:
        assert isinstance(result, Send) and result.body == frame["body"]


@FUZZ
@given(send_frames(), st.sampled_from(["conv", "cid", "body"]), st.integers(0, 10),
       st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]))
def test_lone_surrogate_in_send_is_bad_frame(frame, field, pos, lone):
    value = frame[field]
    pos = min(pos, len(value))
    value = value[:pos] + lone + value[pos:]
    if field == "cid":
        value = value[-MAX_CID_LEN:] if lone in value[-MAX_CID_LEN:] else lone
    if field == "conv":
        value = value[-MAX_CONV_LEN:] if lone in value[-MAX_CONV_LEN:] else lone
    frame[field] = value
    result = parse_client_frame(json.dumps(frame))
    assert isinstance(result, FrameError) and result.code == BAD_FRAME
    assert result.id == frame.get("id")


@FUZZ
@given(st.sampled_from(["ack", "read"]), conv_st, st.integers(0, MAX_SEQ), id_st)
def test_ack_read_round_trip(t, conv, seq, fid):
    result = parse_client_frame(json.dumps({"t": t, "conv": conv, "seq": seq, "id": fid}))
    assert result == (Ack if t == "ack" else Read)(conv=conv, seq=seq, id=fid)


@FUZZ
@given(st.none() | conv_st, st.integers(0, MAX_SEQ), st.integers(1, MAX_SYNC_LIMIT), id_st)
def test_sync_round_trip(conv, after, limit, fid):
    frame = {"t": "sync", "after": after, "limit": limit, "id": fid}
    if conv is not None:
        frame["conv"] = conv
    result = parse_client_frame(json.dumps(frame))
    assert result == Sync(conv=conv, after=after, limit=limit, id=fid)


@FUZZ
@given(st.lists(st.text(clean_text, min_size=1, max_size=MAX_USER_LEN), max_size=30), id_st)
def test_watch_round_trip_dedups_in_order(users, fid):
    result = parse_client_frame(json.dumps({"t": "watch", "users": users, "id": fid}))
    assert result == Watch(users=tuple(dict.fromkeys(users)), id=fid)
