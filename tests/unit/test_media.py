"""runtime.core.media: upload rules, keys, presigned POST policies and signed URLs (pure)."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.core import media as m
from runtime.core.errors import BAD_FRAME, FORBIDDEN, TOO_LARGE

SECRET = m.derive_secret("s" * 64)
OTHER = m.derive_secret("t" * 64)
NOW = 1_800_000_000
users = st.text(min_size=1, max_size=128)
tokens = st.text("0123456789abcdef", min_size=32, max_size=32)
ctypes = st.sampled_from(["image/png", "video/mp4", "audio/ogg", "application/pdf"])


def test_derived_secret_is_not_the_deployment_secret() -> None:
    assert ("s" * 64).encode() != SECRET and len(SECRET) == 32
    assert m.key_id(SECRET) != m.key_id(OTHER)


@pytest.mark.parametrize(("kind", "ctype", "size", "code"), [
    ("image", "image/png", 10 * m.MiB, None),
    ("image", "IMAGE/PNG", 1, None),
    ("image", "image/png", 10 * m.MiB + 1, TOO_LARGE),
    ("video", "video/mp4", 100 * m.MiB, None),
    ("video", "video/mp4", 100 * m.MiB + 1, TOO_LARGE),
    ("image", "image/svg+xml", 10, BAD_FRAME),
    ("image", "video/mp4", 10, BAD_FRAME),
    ("text", "text/plain", 10, BAD_FRAME),
    ("audio", "audio/mpeg", 20 * m.MiB, None),
    ("file", "application/pdf", 50 * m.MiB + 1, TOO_LARGE),
])
def test_check_upload(kind: str, ctype: str, size: int, code: str | None) -> None:
    got = m.check_upload(m.MediaRules(), kind, ctype, size)
    assert (got.code if got else None) == code
    if got:
        assert got.message


def test_rules_are_configurable() -> None:
    rules = m.MediaRules(max_bytes={"image": 100}, content_types={"image": ["image/x-test"]})
    assert m.check_upload(rules, "image", "image/x-test", 100) is None
    assert m.check_upload(rules, "image", "image/x-test", 101).code == TOO_LARGE
    assert m.check_upload(rules, "image", "image/png", 1).code == BAD_FRAME
    assert m.check_upload(rules, "video", "video/mp4", 1).code == BAD_FRAME  # no allow-list


@given(users, tokens)
def test_keys_are_bound_to_their_user(user: str, token: str) -> None:
    key = m.new_key(user, token)
    assert m.valid_key(key) and m.owns(user, key)
    assert ".." not in key.split("/") and key.count("/") == 2
    # only unreserved URL characters: no client or proxy re-encodes or decodes them
    assert all(ch.isascii() and (ch.isalnum() or ch in "/_-~") for ch in key)


@given(users, users, tokens)
def test_no_user_owns_another_users_key(user: str, other: str, token: str) -> None:
    if user != other:
        assert not m.owns(other, m.new_key(user, token))


@pytest.mark.parametrize("key", [
    "", "u/alice", "u/alice/xyz", "u/../0123456789abcdef0123456789abcdef",
    "x/alice/0123456789abcdef0123456789abcdef", "u/a/b/0123456789abcdef0123456789abcdef"])
def test_invalid_keys(key: str) -> None:
    assert not m.valid_key(key) and not m.owns("alice", key)


def test_new_key_wants_a_real_token() -> None:
    with pytest.raises(ValueError):
        m.new_key("alice", "short")


@given(users, tokens, ctypes, st.integers(1, 2**40), st.integers(0, 2**33),
       st.integers(1, 86400))
def test_presigned_post_round_trip(user: str, token: str, ctype: str, size: int, now: int,
                                   ttl: int) -> None:
    key = m.new_key(user, token)
    fields = m.presign_post(SECRET, key, ctype, size, now, ttl)
    grant = m.verify_post(SECRET, fields, now + ttl - 1)
    assert grant == m.PostGrant(key, ctype, 1, size)
    assert m.check_size(grant, size) is None and m.check_size(grant, 1) is None
    assert m.check_size(grant, size + 1).code == "EntityTooLarge"
    assert m.check_size(grant, 0).code == "EntityTooSmall"
    expired = m.verify_post(SECRET, fields, now + ttl)
    assert isinstance(expired, m.Refusal) and expired.code == FORBIDDEN
    assert "expired" in expired.message
    wrong = m.verify_post(OTHER, fields, now)
    assert isinstance(wrong, m.Refusal) and wrong.code == FORBIDDEN


def _fields() -> dict[str, str]:
    return m.presign_post(SECRET, m.new_key("alice", "0" * 32), "image/png", 1000, NOW, 900)


@given(st.sampled_from(["key", "Content-Type", "policy", "x-amz-signature",
                        "x-amz-credential"]), st.text(max_size=40))
def test_any_changed_field_is_refused(name: str, value: str) -> None:
    fields = _fields()
    if fields[name] == value:
        return
    got = m.verify_post(SECRET, {**fields, name: value}, NOW)
    assert isinstance(got, m.Refusal) and got.code in (FORBIDDEN, "bad_request")


def test_a_re_signed_policy_by_someone_without_the_secret_is_refused() -> None:
    fields = _fields()
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"][2] = ["content-length-range", 1, 10**12]
    forged = base64.b64encode(json.dumps(policy).encode()).decode()
    got = m.verify_post(SECRET, {**fields, "policy": forged}, NOW)
    assert isinstance(got, m.Refusal) and "signature" in got.message


def test_missing_fields_are_refused() -> None:
    for name in ("policy", "x-amz-signature", "key", "Content-Type"):
        fields = _fields()
        del fields[name]
        assert isinstance(m.verify_post(SECRET, fields, NOW), m.Refusal)


def test_a_signed_but_malformed_policy_is_refused() -> None:
    for policy in ("not base64!", base64.b64encode(b"[1]").decode(),
                   base64.b64encode(b'{"expiration":"x","conditions":[]}').decode()):
        fields = {**_fields(), "policy": policy}
        fields["x-amz-signature"] = m._mac(SECRET, policy)
        got = m.verify_post(SECRET, fields, NOW)
        assert isinstance(got, m.Refusal) and got.code == "bad_request"


def _query(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path.removeprefix("/v1/media/"), dict(parse_qsl(parts.query))


@given(users, tokens, st.integers(0, 2**33), st.integers(1, 10**7))
def test_signed_url_round_trip(user: str, token: str, now: int, ttl: int) -> None:
    key = m.new_key(user, token)
    url = m.sign_url(SECRET, "http://127.0.0.1:7420/", key, now + ttl)
    assert url.startswith("http://127.0.0.1:7420/v1/media/u/")
    path_key, query = _query(url)
    assert path_key == key
    assert m.verify_url([SECRET], key, query, now) is None
    assert m.verify_url([OTHER, SECRET], key, query, now) is None  # rotation: older key kept
    assert m.verify_url([SECRET], key, query, now + ttl).message == "the URL expired"
    assert m.verify_url([OTHER], key, query, now).message == "unknown key_id"
    other_key = m.new_key(user + "x", token)
    assert m.verify_url([SECRET], other_key, query, now).message == "bad signature"


@given(st.sampled_from(["expires", "key_id", "signature"]), st.text(max_size=70))
def test_any_changed_url_parameter_is_refused(name: str, value: str) -> None:
    key = m.new_key("alice", "0" * 32)
    _, query = _query(m.sign_url(SECRET, "http://h", key, NOW + 60))
    if query[name] == value:
        return
    got = m.verify_url([SECRET], key, {**query, name: value}, NOW)
    assert got is not None and got.code == FORBIDDEN


def test_media_of() -> None:
    assert m.media_of({"key": "k", "size": 3, "content_type": "a/b"}) == ("k", "a/b", 3)
    assert m.media_of({"key": "k"}) == ("k", None, None)
    for bad in ([], {"key": 1}, {}, {"key": "k", "size": "3"}, {"key": "k", "size": True},
                {"key": "k", "content_type": 5}):
        got = m.media_of(bad)
        assert isinstance(got, m.Refusal) and got.code == BAD_FRAME


def test_a_trailing_newline_is_not_a_plain_id() -> None:
    # `$` matches before a final newline: 'alice\n' must not pass for the plain id 'alice'
    assert m.user_segment("alice\n") != "alice\n" and m.user_segment("alice\n").startswith("~")
    key = m.new_key("0\n", "0" * 32)
    assert m.valid_key(key) and m.owns("0\n", key) and not m.owns("0", key)
    assert not m.valid_key(m.new_key("alice", "0" * 32) + "\n")
    with pytest.raises(ValueError):
        m.new_key("alice", "0" * 32 + "\n")


PIN = m.Pinned("9e107d9d372bb6826bd81d3542a419d6", "image/png")


def test_a_pinned_url_round_trip() -> None:
    key = m.new_key("alice", "0" * 32)
    url = m.sign_url(SECRET, "http://h", key, NOW + 60, PIN)
    _, query = _query(url)
    assert (query["etag"], query["type"]) == (PIN.etag, PIN.content_type)
    assert m.verify_url([SECRET], key, query, NOW) is None
    assert m.pin_of(query) == PIN
    assert m.pin_of(_query(m.sign_url(SECRET, "http://h", key, NOW + 60))[1]) is None


@pytest.mark.parametrize("change", [
    {"etag": "0" * 32}, {"type": "text/html"}, {"etag": PIN.etag + "\nx"},
    {"type": "image/png\n"}, {"etag": ""}])
def test_a_pinned_url_cannot_be_repinned(change: dict[str, str]) -> None:
    key = m.new_key("alice", "0" * 32)
    _, query = _query(m.sign_url(SECRET, "http://h", key, NOW + 60, PIN))
    got = m.verify_url([SECRET], key, {**query, **change}, NOW)
    assert got is not None and got.code == FORBIDDEN


def test_a_pin_cannot_be_dropped_or_added() -> None:
    key = m.new_key("alice", "0" * 32)
    _, pinned = _query(m.sign_url(SECRET, "http://h", key, NOW + 60, PIN))
    for name in ("etag", "type"):
        dropped = {k: v for k, v in pinned.items() if k != name}
        assert m.verify_url([SECRET], key, dropped, NOW) is not None
    both = {k: v for k, v in pinned.items() if k not in ("etag", "type")}
    assert m.verify_url([SECRET], key, both, NOW).message == "bad signature"
    _, plain = _query(m.sign_url(SECRET, "http://h", key, NOW + 60))
    added = {**plain, "etag": PIN.etag, "type": PIN.content_type}
    assert m.verify_url([SECRET], key, added, NOW).message == "bad signature"


def test_only_well_formed_pins_are_signed() -> None:
    key = m.new_key("alice", "0" * 32)
    for bad in (m.Pinned('"abc"', "image/png"), m.Pinned("abc", "image/png\nx"),
                m.Pinned("", "image/png")):
        with pytest.raises(ValueError):
            m.sign_url(SECRET, "http://h", key, NOW + 60, bad)
