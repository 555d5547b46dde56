"""Example tests for `parse_client_frame`: every client frame type of protocol v1."""

from __future__ import annotations

import json

import pytest

from runtime.core.errors import BAD_FRAME, TOO_LARGE
from runtime.core.frames import (
    DEFAULT_SYNC_LIMIT,
    KINDS,
    MAX_CID_LEN,
    MAX_CONV_LEN,
    MAX_ID_LEN,
    MAX_MEMBERS,
    MAX_SEQ,
    MAX_SYNC_LIMIT,
    MAX_USER_LEN,
    MAX_WATCH,
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

LONE = "\ud800"  # a lone surrogate: json.loads accepts "\\ud800", UTF-8 cannot carry it


def parse(obj, limits: Limits = Limits()):
    return parse_client_frame(json.dumps(obj), limits)


def assert_error(result, code: str = BAD_FRAME, fid: str | None = None, needle: str = ""):
    assert isinstance(result, FrameError), result
    assert result.code == code, result
    assert result.id == fid, result
    assert result.message, "an error needs a human-readable message"
    if needle:
        assert needle in result.message, result


SEND = {"t": "send", "conv": "c1", "cid": "m-1", "kind": "text", "body": "hi"}


def send(**over):
    frame = dict(SEND)
    for key, value in over.items():
        if value is ...:
            frame.pop(key)
        else:
            frame[key] = value
    return frame


# -- transport-level ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", " ", "{", "not json", "{'t': 'ping'}", '{"t": "ping"',
                                 "\ufeff{}", '{"t": "ping"} x', "[1,]"])
def test_invalid_json_is_bad_frame(raw):
    assert_error(parse_client_frame(raw), needle="JSON")


@pytest.mark.parametrize("raw", ["[]", "[1, 2]", '"ping"', "1", "1.5", "null", "true",
                                 '[{"t": "ping"}]'])
def test_non_object_json_is_bad_frame(raw):
    assert_error(parse_client_frame(raw), needle="object")


def test_binary_frame_is_bad_frame_even_when_it_holds_valid_json():
    assert_error(parse_client_frame(b'{"t":"ping"}'), needle="binary")
    assert_error(parse_client_frame(b""))


def test_oversized_binary_frame_is_too_large():
    limits = Limits(max_frame_bytes=10)
    assert_error(parse_client_frame(b"x" * 11, limits), TOO_LARGE)
    assert_error(parse_client_frame(b"x" * 10, limits), BAD_FRAME)  # at the limit: binary


def test_oversized_text_frame_is_too_large_and_exact_limit_is_accepted():
    base = '{"t":"ping","pad":""}'
    limits = Limits(max_frame_bytes=100)
    exact = base.replace('""', '"' + "x" * (100 - len(base)) + '"')
    assert len(exact.encode()) == 100
    assert parse_client_frame(exact, limits) == Ping()
    over = exact.replace('"x', '"xx')
    assert_error(parse_client_frame(over, limits), TOO_LARGE, needle="100")


def test_too_large_does_not_parse_so_no_id_is_echoed():
    raw = json.dumps({"t": "ping", "id": "r1", "pad": "x" * 200})
    assert_error(parse_client_frame(raw, Limits(max_frame_bytes=100)), TOO_LARGE, None)


def test_frame_size_is_counted_in_utf8_bytes_not_characters():
    # 40 characters of 3 bytes each: 120 bytes although only ~55 characters
    raw = '{"t":"ping","pad":"' + "\u20ac" * 40 + '"}'
    assert len(raw) < 100 < len(raw.encode())
    assert_error(parse_client_frame(raw, Limits(max_frame_bytes=100)), TOO_LARGE)
    assert parse_client_frame(raw, Limits(max_frame_bytes=200)) == Ping()


def test_oversized_text_with_lone_surrogates_is_too_large_not_a_crash():
    raw = '{"t":"ping","pad":"' + LONE * 50 + '"}'
    assert_error(parse_client_frame(raw, Limits(max_frame_bytes=100)), TOO_LARGE)


def test_default_limit_is_64_kib():
    pad = "x" * (64 * 1024)
    assert_error(parse({"t": "ping", "pad": pad}), TOO_LARGE)


def test_deeply_nested_json_is_bad_frame_not_recursion_error():
    depth = 30_000
    raw = "[" * depth + "]" * depth
    assert_error(parse_client_frame(raw))
    raw = '{"t":"ping","x":' + "[" * depth + "]" * depth + "}"
    assert_error(parse_client_frame(raw))


def test_integer_with_too_many_digits_is_bad_frame_not_value_error():
    raw = '{"t":"ack","conv":"c","seq":' + "9" * 5000 + "}"
    assert_error(parse_client_frame(raw))


def test_raw_lone_surrogate_character_in_text_is_handled():
    # the surrogate as a raw code point in the text, not as a JSON escape
    raw = '{"t":"typing","conv":"a' + LONE + '"}'
    assert_error(parse_client_frame(raw), needle="UTF-8")


def test_unknown_fields_are_ignored_so_the_protocol_can_grow():
    assert parse({"t": "ping", "future": {"x": [1, 2]}, "id": "p"}) == Ping(id="p")


# -- t and id --------------------------------------------------------------------------------


@pytest.mark.parametrize("t", ["pong", "PING", "Send", "", "hello", "msg", " ping", "error"])
def test_unknown_t_is_bad_frame_with_id_echoed(t):
    assert_error(parse({"t": t, "id": "q7"}), fid="q7", needle="unknown")


@pytest.mark.parametrize("t", [None, 1, True, ["ping"], {"t": "ping"}, 1.5])
def test_missing_or_non_string_t_is_bad_frame_with_id_echoed(t):
    frame = {"id": "q8"} if t is None else {"t": t, "id": "q8"}
    assert_error(parse(frame), fid="q8", needle="'t'")


@pytest.mark.parametrize("fid", [1, True, ["a"], {"a": 1}, 1.5, "x" * (MAX_ID_LEN + 1)])
def test_bad_id_is_bad_frame_and_not_echoed(fid):
    assert_error(parse({"t": "ping", "id": fid}), fid=None, needle="'id'")


def test_id_of_max_length_and_empty_id_are_echoed():
    fid = "i" * MAX_ID_LEN
    assert parse({"t": "ping", "id": fid}) == Ping(id=fid)
    assert parse({"t": "ping", "id": ""}) == Ping(id="")
    assert parse({"t": "ping", "id": None}) == Ping(id=None)


@pytest.mark.parametrize(
    "frame",
    [
        send(conv=...),
        send(cid=""),
        send(kind="gif"),
        send(body=None),
        {"t": "ack", "conv": "c", "seq": True},
        {"t": "read", "conv": "c"},
        {"t": "sync", "limit": 0},
        {"t": "create"},
        {"t": "watch", "users": "bob"},
        {"t": "typing"},
        {"t": "push_register", "platform": "sms", "token": "x"},
        {"t": "upload", "kind": "text", "content_type": "a/b", "size": 0},
        {"t": "nope"},
    ],
)
def test_every_field_error_echoes_the_frame_id(frame):
    result = parse({**frame, "id": "req-42"})
    assert isinstance(result, FrameError)
    assert result.id == "req-42"
    assert parse(frame).id is None


# -- ping --------------------------------------------------------------------------------------


def test_ping():
    assert parse({"t": "ping"}) == Ping()
    assert parse({"t": "ping", "id": "1"}) == Ping(id="1")


# -- create ------------------------------------------------------------------------------------


def test_create_minimal_and_full():
    assert parse({"t": "create", "members": ["bob"]}) == Create(members=("bob",))
    got = parse({"t": "create", "members": ["bob", "carol"], "title": "Team", "conv": "c-9",
                 "id": "r"})
    assert got == Create(members=("bob", "carol"), title="Team", conv="c-9", id="r")


def test_create_members_are_deduplicated_in_first_seen_order():
    got = parse({"t": "create", "members": ["b", "a", "b", "c", "a"]})
    assert isinstance(got, Create)
    assert got.members == ("b", "a", "c")


def test_create_empty_members_and_empty_title_are_allowed():
    assert parse({"t": "create", "members": []}) == Create(members=())
    assert parse({"t": "create", "members": ["x"], "title": ""}) == Create(("x",), title="")


@pytest.mark.parametrize(
    "members",
    [None, "bob", {"bob": 1}, 5, [5], ["bob", None], ["bob", ""], [["bob"]], [True],
     ["u" * (MAX_USER_LEN + 1)], ["ok", "bad" + LONE]],
)
def test_create_bad_members(members):
    frame = {"t": "create", "id": "c"}
    if members is not None:
        frame["members"] = members
    assert_error(parse(frame), fid="c", needle="members")


def test_create_member_limits():
    at_max = [f"u{i}" for i in range(MAX_MEMBERS)]
    assert isinstance(parse({"t": "create", "members": at_max}), Create)
    assert_error(parse({"t": "create", "members": at_max + ["one-more"]}), needle="members")
    assert parse({"t": "create", "members": ["u" * MAX_USER_LEN]}).members == (
        "u" * MAX_USER_LEN,)


def test_create_member_limit_counts_before_deduplication():
    # MAX_MEMBERS+1 entries that collapse to one member are still refused: bounded input
    assert_error(parse({"t": "create", "members": ["a"] * (MAX_MEMBERS + 1)}))


@pytest.mark.parametrize(
    "extra,needle",
    [({"title": 5}, "title"), ({"title": "t" * 257}, "title"), ({"title": LONE}, "title"),
     ({"conv": ""}, "conv"), ({"conv": 3}, "conv"), ({"conv": "c" * (MAX_CONV_LEN + 1)}, "conv"),
     ({"conv": "a" + LONE}, "conv")],
)
def test_create_bad_optional_fields(extra, needle):
    assert_error(parse({"t": "create", "members": ["b"], **extra}), needle=needle)


# -- send --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_send_every_kind(kind):
    got = parse(send(kind=kind, id="s1"))
    assert got == Send(conv="c1", cid="m-1", kind=kind, body="hi", id="s1")


def test_send_with_media_and_empty_body():
    media = {"key": "k/1", "url": "https://cdn/x", "content_type": "image/png", "size": 3}
    got = parse(send(kind="image", body="", media=media))
    assert got == Send(conv="c1", cid="m-1", kind="image", body="", media=media)


@pytest.mark.parametrize("missing", ["conv", "cid", "kind", "body"])
def test_send_missing_field(missing):
    assert_error(parse(send(**{missing: ...}, id="x")), fid="x", needle=missing)


@pytest.mark.parametrize("missing", ["conv", "cid", "kind", "body"])
def test_send_null_field_counts_as_missing(missing):
    assert_error(parse(send(**{missing: None})), needle=missing)


@pytest.mark.parametrize(
    "field,value",
    [("conv", 1), ("conv", ["c"]), ("conv", True), ("cid", 7), ("cid", {"a": 1}),
     ("kind", 1), ("kind", ["text"]), ("body", 1), ("body", ["hi"]), ("body", {"text": "hi"}),
     ("body", False), ("media", "url"), ("media", [1]), ("media", 5), ("media", True)],
)
def test_send_wrong_types(field, value):
    assert_error(parse(send(**{field: value})), needle=field)


@pytest.mark.parametrize("kind", ["Text", "gif", "", "sticker", "text ", "x" * 17])
def test_send_unknown_kind(kind):
    assert_error(parse(send(kind=kind)), needle="kind")


def test_send_cid_length_bounds():
    assert parse(send(cid="c" * MAX_CID_LEN)).cid == "c" * MAX_CID_LEN
    assert parse(send(cid="c")).cid == "c"
    assert_error(parse(send(cid="c" * (MAX_CID_LEN + 1))), needle="cid")
    assert_error(parse(send(cid="")), needle="cid")


def test_send_conv_length_bounds_are_in_characters():
    emoji = "\U0001f600" * MAX_CONV_LEN  # 4 bytes each, still MAX_CONV_LEN characters
    assert parse(send(conv=emoji)).conv == emoji
    assert_error(parse(send(conv="c" * (MAX_CONV_LEN + 1))), needle="conv")
    assert_error(parse(send(conv="")), needle="conv")


def test_send_body_over_max_body_bytes_is_too_large_with_id():
    limits = Limits(max_body_bytes=10)
    assert isinstance(parse(send(body="x" * 10), limits), Send)
    assert_error(parse(send(body="x" * 11, id="b"), limits), TOO_LARGE, "b", needle="10")


def test_send_body_limit_counts_utf8_bytes():
    limits = Limits(max_body_bytes=10)
    assert isinstance(parse(send(body="\u00e9" * 5), limits), Send)  # 10 bytes
    assert_error(parse(send(body="\u00e9" * 6), limits), TOO_LARGE)  # 6 chars, 12 bytes


def test_send_body_default_limit_is_16_kib():
    assert isinstance(parse(send(body="x" * 16 * 1024)), Send)
    assert_error(parse(send(body="x" * (16 * 1024 + 1))), TOO_LARGE)


@pytest.mark.parametrize("field", ["conv", "cid", "body"])
def test_send_lone_surrogate_is_bad_frame(field):
    assert_error(parse(send(**{field: "ok" + LONE, "id": "z"})), BAD_FRAME, "z", "UTF-8")


def test_send_lone_low_surrogate_and_escaped_form():
    raw = '{"t":"send","conv":"c","cid":"m","kind":"text","body":"\\udc00x"}'
    assert_error(parse_client_frame(raw), needle="UTF-8")


def test_send_surrogate_pair_escape_is_a_valid_character():
    raw = '{"t":"send","conv":"c","cid":"m","kind":"text","body":"\\ud83d\\ude00"}'
    got = parse_client_frame(raw)
    assert isinstance(got, Send)
    assert got.body == "\U0001f600"


def test_send_lone_surrogate_body_over_limit_is_not_accepted():
    got = parse(send(body=LONE * 20), Limits(max_body_bytes=10))
    assert isinstance(got, FrameError)


# -- ack / read --------------------------------------------------------------------------------


@pytest.mark.parametrize("t,cls", [("ack", Ack), ("read", Read)])
def test_ack_read_valid(t, cls):
    assert parse({"t": t, "conv": "c", "seq": 5, "id": "a"}) == cls(conv="c", seq=5, id="a")
    assert parse({"t": t, "conv": "c", "seq": 0}) == cls(conv="c", seq=0)
    assert parse({"t": t, "conv": "c", "seq": MAX_SEQ}) == cls(conv="c", seq=MAX_SEQ)
    epoch_seq = (3 << 40) | 17
    assert parse({"t": t, "conv": "c", "seq": epoch_seq}).seq == epoch_seq


@pytest.mark.parametrize("t", ["ack", "read"])
@pytest.mark.parametrize(
    "seq", [True, False, "5", 5.0, 1.5, -1, MAX_SEQ + 1, 2**64, [5], {"seq": 5}, -(2**70)],
)
def test_ack_read_bad_seq(t, seq):
    assert_error(parse({"t": t, "conv": "c", "seq": seq, "id": "k"}), fid="k", needle="seq")


@pytest.mark.parametrize("t", ["ack", "read"])
def test_ack_read_missing_fields(t):
    assert_error(parse({"t": t, "conv": "c"}), needle="seq")
    assert_error(parse({"t": t, "seq": 1}), needle="conv")
    assert_error(parse({"t": t, "conv": None, "seq": 1}), needle="conv")
    assert_error(parse({"t": t, "conv": "c", "seq": None}), needle="seq")


@pytest.mark.parametrize("t", ["ack", "read"])
def test_ack_read_float_forms_are_not_integers(t):
    for raw_seq in ["1e3", "5.0", "-0.0"]:
        raw = f'{{"t":"{t}","conv":"c","seq":{raw_seq}}}'
        assert_error(parse_client_frame(raw), needle="seq")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_numbers_json_does_not_have_are_not_json(number):
    # json.loads reads these (as nan and inf); no JSON reader could be sent them back
    for raw in [f'{{"t":"ack","conv":"c","seq":{number}}}',
                f'{{"t":"send","conv":"c","cid":"m","kind":"text","body":"x",'
                f'"media":{{"key":"k","w":{number}}}}}']:
        assert_error(parse_client_frame(raw), needle="not valid JSON")
    # the id comes back, as with any refused frame
    assert parse_client_frame(f'{{"t":"ping","id":"p1","x":{number}}}') == FrameError(
        BAD_FRAME, "frame is not valid JSON: it holds NaN, Infinity or a number beyond a "
        "double's range", "p1")
    # a finite float where the protocol allows any value still goes through
    assert isinstance(parse_client_frame('{"t":"send","conv":"c","cid":"m","kind":"text",'
                                         '"body":"x","media":{"key":"k","w":1.5}}'), Send)


# -- sync --------------------------------------------------------------------------------------


def test_sync_defaults_without_conv():
    assert parse({"t": "sync"}) == Sync(conv=None, after=0, limit=DEFAULT_SYNC_LIMIT)
    assert DEFAULT_SYNC_LIMIT == 100


def test_sync_with_conv_after_limit():
    got = parse({"t": "sync", "conv": "c", "after": 42, "limit": 7, "id": "y"})
    assert got == Sync(conv="c", after=42, limit=7, id="y")


def test_sync_limit_bounds():
    assert parse({"t": "sync", "conv": "c", "limit": 1}).limit == 1
    assert parse({"t": "sync", "conv": "c", "limit": MAX_SYNC_LIMIT}).limit == MAX_SYNC_LIMIT
    assert MAX_SYNC_LIMIT == 1000
    for bad in [0, -1, MAX_SYNC_LIMIT + 1, True, "10", 10.0]:
        assert_error(parse({"t": "sync", "conv": "c", "limit": bad}), needle="limit")


def test_sync_null_limit_and_after_take_defaults():
    assert parse({"t": "sync", "conv": "c", "after": None, "limit": None}) == Sync(conv="c")


@pytest.mark.parametrize("after", [-1, True, "0", 0.0, MAX_SEQ + 1])
def test_sync_bad_after(after):
    assert_error(parse({"t": "sync", "conv": "c", "after": after}), needle="after")


@pytest.mark.parametrize("conv", ["", 5, ["c"], "c" * (MAX_CONV_LEN + 1), LONE])
def test_sync_bad_conv(conv):
    assert_error(parse({"t": "sync", "conv": conv}), needle="conv")


# -- watch -------------------------------------------------------------------------------------


def test_watch_valid_and_dedup():
    assert parse({"t": "watch", "users": ["a", "b", "a"], "id": "w"}) == Watch(("a", "b"), "w")
    assert parse({"t": "watch", "users": []}) == Watch(())


def test_watch_limits():
    users = [f"u{i}" for i in range(MAX_WATCH)]
    assert parse({"t": "watch", "users": users}).users == tuple(users)
    assert_error(parse({"t": "watch", "users": users + ["x"]}), needle="users")


@pytest.mark.parametrize("users", [None, "a", {"a": 1}, [1], ["a", ""], [None], [LONE],
                                   ["u" * (MAX_USER_LEN + 1)], [False]])
def test_watch_bad_users(users):
    frame = {"t": "watch"} if users is None else {"t": "watch", "users": users}
    assert_error(parse(frame), needle="users")


# -- typing ------------------------------------------------------------------------------------


def test_typing():
    assert parse({"t": "typing", "conv": "c", "id": "t"}) == Typing(conv="c", id="t")
    for bad in [None, "", 1, ["c"], LONE]:
        frame = {"t": "typing"} if bad is None else {"t": "typing", "conv": bad}
        assert_error(parse(frame), needle="conv")


# -- push_register -----------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["fcm", "apns"])
def test_push_register_valid(platform):
    got = parse({"t": "push_register", "platform": platform, "token": "tok", "id": "p"})
    assert got == PushRegister(platform=platform, token="tok", id="p")


@pytest.mark.parametrize(
    "frame,needle",
    [({"token": "t"}, "platform"), ({"platform": "FCM", "token": "t"}, "platform"),
     ({"platform": "sms", "token": "t"}, "platform"), ({"platform": 1, "token": "t"}, "platform"),
     ({"platform": "fcm"}, "token"), ({"platform": "fcm", "token": ""}, "token"),
     ({"platform": "fcm", "token": 5}, "token"), ({"platform": "apns", "token": "t" * 4097},
                                                   "token"),
     ({"platform": "apns", "token": LONE}, "token")],
)
def test_push_register_invalid(frame, needle):
    assert_error(parse({"t": "push_register", **frame}), needle=needle)


def test_push_register_token_at_max_length():
    assert parse({"t": "push_register", "platform": "fcm", "token": "t" * 4096}).token == (
        "t" * 4096)


# -- push_unregister ---------------------------------------------------------------------------


def test_push_unregister_needs_no_fields():
    assert parse({"t": "push_unregister", "id": "u"}) == PushUnregister(id="u")
    assert parse({"t": "push_unregister"}) == PushUnregister()
    # fields are not read: nothing a client sends names another device or account
    assert parse({"t": "push_unregister", "token": "x", "user": "bob"}) == PushUnregister()


def test_push_unregister_id_is_checked_like_any_frame():
    assert_error(parse({"t": "push_unregister", "id": 5}), needle="id")


# -- upload ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_upload_valid(kind):
    got = parse({"t": "upload", "kind": kind, "content_type": "image/png", "size": 123,
                 "id": "u"})
    assert got == Upload(kind=kind, content_type="image/png", size=123, id="u")


def test_upload_size_bounds():
    base = {"t": "upload", "kind": "file", "content_type": "a/b"}
    assert parse({**base, "size": 1}).size == 1
    assert parse({**base, "size": 2**40}).size == 2**40
    for bad in [0, -5, 2**40 + 1, True, "10", 10.0, None]:
        assert_error(parse({**base, "size": bad}), needle="size")


@pytest.mark.parametrize(
    "frame,needle",
    [({"content_type": "a/b", "size": 1}, "kind"),
     ({"kind": "doc", "content_type": "a/b", "size": 1}, "kind"),
     ({"kind": "file", "size": 1}, "content_type"),
     ({"kind": "file", "content_type": "", "size": 1}, "content_type"),
     ({"kind": "file", "content_type": "x" * 256, "size": 1}, "content_type"),
     ({"kind": "file", "content_type": ["a/b"], "size": 1}, "content_type"),
     ({"kind": "file", "content_type": "a/" + LONE, "size": 1}, "content_type")],
)
def test_upload_invalid(frame, needle):
    assert_error(parse({"t": "upload", **frame}), needle=needle)


# -- results are immutable values ---------------------------------------------------------------


def test_frames_are_frozen():
    got = parse(send())
    with pytest.raises(AttributeError):
        got.seq = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        got.conv = "other"  # type: ignore[misc]
