"""Sealing bodies and media at rest (AES-256-GCM): round trips, binding to the message,
tampering, key ids and rotation of the keyring file."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgctl import keyring_file
from runtime import keyring
from runtime.core.sealing import SEALED_PREFIX, Sealer, SealError, is_sealed
from runtime.ports import Message, Send

K1, K2 = os.urandom(32), os.urandom(32)


def send(body: str, media: dict | None = None, cid: str = "c1") -> Send:
    return Send("conv", cid, "alice", "phone", "text", body, media, 1)


def stored(s: Send, seq: int = 1) -> Message:
    return Message(s.conv, seq, seq - 1, "mid", s.cid, s.sender, s.device, s.ts, s.kind,
                   s.body, s.media)


@given(st.text(max_size=2000), st.one_of(st.none(), st.dictionaries(
    st.text(max_size=10), st.text(max_size=20), max_size=4)))
def test_what_is_sealed_opens_to_the_same(body: str, media: dict | None) -> None:
    sealer = Sealer({"k1": K1}, "k1")
    sealed = sealer.seal_send(send(body, media))
    assert is_sealed(sealed.body)
    if len(body) >= 12:  # shorter texts can turn up in base64 by chance
        assert body not in sealed.body
    assert sealed.media is None or set(sealed.media) == {"sealed"}
    opened = sealer.open_message(stored(sealed))
    assert (opened.body, opened.media) == (body, media)


def test_sealing_and_opening_change_the_body_and_media_alone() -> None:
    # the copy is made without dataclasses.replace: every other field must come through
    sealer = Sealer({"k1": K1}, "k1")
    original = replace(send("hi", {"key": "k"}), moved_from=7)
    sealed = sealer.seal_send(original)
    assert type(sealed) is Send and sealed.body != original.body
    assert replace(sealed, body="hi", media={"key": "k"}) == original
    message = replace(stored(sealed, seq=5), moved_from=3)
    opened = sealer.open_message(message)
    assert type(opened) is Message
    assert opened == replace(message, body="hi", media={"key": "k"})
    assert message.body == sealed.body  # the record opened is left as it was


def test_a_sealed_body_moved_to_another_message_does_not_open() -> None:
    sealer = Sealer({"k1": K1}, "k1")
    sealed = sealer.seal_send(send("secret", cid="c1"))
    with pytest.raises(SealError):
        sealer.open_message(replace(stored(sealed), cid="c2"))
    with pytest.raises(SealError):
        sealer.open_message(replace(stored(sealed), conv="other"))


def test_a_tampered_value_does_not_open() -> None:
    sealer = Sealer({"k1": K1}, "k1")
    body = sealer.seal_send(send("secret")).body
    flipped = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    with pytest.raises(SealError):
        sealer.open_message(stored(send(flipped)))


def test_old_keys_open_what_they_sealed_and_unknown_ones_say_so() -> None:
    old = Sealer({"k1": K1}, "k1").seal_send(send("before"))
    both = Sealer({"k1": K1, "k2": K2}, "k2")
    new = both.seal_send(send("after"))
    assert new.body.startswith(f"{SEALED_PREFIX}k2.")
    assert both.open_message(stored(old)).body == "before"
    with pytest.raises(SealError, match="not in the keyring"):
        Sealer({"k2": K2}, "k2").open_message(stored(old))


def test_records_from_before_sealing_read_as_they_are() -> None:
    sealer = Sealer({"k1": K1}, "k1")
    msg = stored(send("plain old", {"key": "u/a/b"}))
    assert sealer.open_message(msg) is msg


def test_the_keyring_file_is_private_and_rotation_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    assert keyring_file.ensure(path) is True and keyring_file.ensure(path) is False
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    now = [0.0]
    ring = keyring.Keyring(path, clock=lambda: now[0])
    first = ring.sealer().current
    sealed_before = ring.seal_send(send("one"))
    raw, kid = keyring_file.add_key(keyring.read(path))
    keyring_file.write(path, raw)
    assert ring.sealer().current == first  # checked at most once a second
    now[0] += 1.5
    assert ring.sealer().current == kid != first
    assert ring.seal_send(send("two")).body.startswith(f"{SEALED_PREFIX}{kid}.")
    assert ring.open_message(stored(sealed_before)).body == "one"


def test_a_value_under_a_key_added_since_the_last_look_opens_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring_file.ensure(path)
    reader = keyring.Keyring(path, clock=lambda: 0.0)  # never rechecks by time
    raw, _ = keyring_file.add_key(keyring.read(path))
    keyring_file.write(path, raw)
    writer = keyring.Keyring(path)
    sealed = writer.seal_send(send("fresh"))
    assert reader.open_message(stored(sealed)).body == "fresh"
