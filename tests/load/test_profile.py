"""The profile loader: every bundled profile loads; each kind of bad input is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import PROFILES_DIR
from loadtest import profile as pm

BASE = "users: 10\nspawn_rate: 5\nduration: 30s\n"


def parse(extra: str = "", base: str = BASE) -> pm.Profile:
    return pm.parse(base + extra, "profiles/x.yaml")


def error(text: str) -> str:
    with pytest.raises(pm.ProfileError) as info:
        pm.parse(text, "profiles/x.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("profiles/x.yaml: ")
    return message


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_profiles_load(path: Path) -> None:
    prof = pm.load(path)
    assert prof.name == path.stem
    assert prof.users > 0 and prof.duration > 0 and prof.description


def test_the_five_profiles_are_there() -> None:
    names = {p.stem for p in PROFILES_DIR.glob("*.yaml")}
    assert names >= {"steady", "groups", "reconnect-storm", "catch-up", "presence-churn"}


def test_behaviours_of_the_bundled_profiles() -> None:
    assert pm.load(PROFILES_DIR / "reconnect-storm.yaml").storm is not None
    assert pm.load(PROFILES_DIR / "catch-up.yaml").offline is not None
    assert pm.load(PROFILES_DIR / "presence-churn.yaml").churn is not None
    groups = pm.load(PROFILES_DIR / "groups.yaml")
    assert groups.conversations.groups and groups.conversations.mix_group > 0
    assert any(s.kind == "spike" for s in groups.shape)


def test_defaults_and_values() -> None:
    p = parse("think_time: 2s\nmessage_sizes: [64, 128]\n")
    assert (p.users, p.spawn_rate, p.duration) == (10, 5.0, 30.0)
    assert p.think_time == (2.0, 2.0)
    assert p.message_sizes == ((64, 1.0), (128, 1.0))
    assert p.conversations.direct == 2 and p.conversations.mix_direct == 1.0
    assert [s.kind for s in p.shape] == ["ramp"]
    assert p.name == "profile"


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), (2.5, 2.5), ("90s", 90), ("500ms", 0.5), ("5m", 300), ("1m30s", 90),
    ("1h", 3600), (" 2 m ", 120)])
def test_durations(text: object, seconds: float) -> None:
    assert pm.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "1m30", "-3s", True, None, [1], "1.2.3s"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        pm.parse_duration(text)


def test_overrides() -> None:
    p = parse().with_overrides(users=3, duration=7.0, spawn_rate=1.5)
    assert (p.users, p.duration, p.spawn_rate) == (3, 7.0, 1.5)
    assert parse().with_overrides() == parse()


@pytest.mark.parametrize("text,expected", [
    ("users: [", "not valid YAML at line 1"),
    ("", "the profile is empty"),
    ("- 1\n- 2\n", "a profile must be a mapping of settings"),
    ("spawn_rate: 1\nduration: 5s\n", "missing required key 'users'"),
    ("users: 0\nspawn_rate: 1\nduration: 5s\n", "users must be a positive integer"),
    ("users: ten\nspawn_rate: 1\nduration: 5s\n", "users must be a positive integer"),
    ("users: true\nspawn_rate: 1\nduration: 5s\n", "users must be a positive integer"),
    ("users: 2.5\nspawn_rate: 1\nduration: 5s\n", "users must be a positive integer"),
    ("users: 5\nspawn_rate: 0\nduration: 5s\n", "spawn_rate must be a positive number"),
    ("users: 5\nspawn_rate: 1\nduration: soon\n", "duration: bad duration 'soon'"),
    ("users: 5\nspawn_rate: 1\nduration: 0s\n", "duration must be longer than 0s"),
    (BASE + "userz: 5\n", "unknown key 'userz' (known: name, description, users"),
    (BASE + "conversations: {direct: 2, group: [5]}\n",
     "unknown key 'conversations.group' (known: direct, groups, mix)"),
    (BASE + "conversations: {direct: 3}\n", "conversations.direct must be an even integer"),
    (BASE + "conversations: {groups: [2]}\n", "conversations.groups[0] must be a group size"),
    (BASE + "conversations: {groups: 5}\n", "conversations.groups must be a list"),
    (BASE + "conversations: {direct: 0, groups: [], mix: {direct: 0}}\n",
     "conversations.mix must give a positive share"),
    (BASE + "conversations: {direct: 0, groups: [5], mix: {direct: 1}}\n",
     "conversations.mix.direct is > 0 but conversations.direct is 0"),
    (BASE + "conversations: {mix: {group: 1}}\n",
     "conversations.mix.group is > 0 but conversations.groups is empty"),
    (BASE + "conversations: {mix: {direct: -1}}\n",
     "conversations.mix.direct must be a number >= 0"),
    (BASE + "message_sizes: {0: 1}\n", "message_sizes: size 0 must be from 1 to 16384"),
    (BASE + "message_sizes: {20000: 1}\n", "size 20000 must be from 1 to 16384"),
    (BASE + "message_sizes: {64: 0}\n", "message_sizes.64 must be a positive number"),
    (BASE + "message_sizes: hello\n", "message_sizes must map body sizes"),
    (BASE + "think_time: {min: 3s, max: 1s}\n", "think_time.min must not exceed think_time.max"),
    (BASE + "think_time: {min: 1s}\n", "think_time needs both min and max"),
    (BASE + "think_time: {min: 1s, max: 2s, avg: 1s}\n", "unknown key 'think_time.avg'"),
    (BASE + "sync_ratio: 2\n", "sync_ratio must be a number between 0 and 1"),
    (BASE + "shape: []\n", "shape must be a non-empty list of stages"),
    (BASE + "shape: [{users: 5}]\n", "shape[0] must be a mapping with 'stage'"),
    (BASE + "shape: [{stage: plateau}]\n", "shape[0].stage must be one of ramp, hold, spike"),
    (BASE + "shape: [{stage: ramp}]\n", "shape[0]: a ramp stage needs 'users'"),
    (BASE + "shape: [{stage: ramp, users: lots}]\n", "shape[0].users must be a user count"),
    (BASE + "shape: [{stage: ramp, users: -5}]\n", "shape[0].users must be a user count"),
    (BASE + "shape: [{stage: ramp, users: 5, for: 2s, rate: 1}]\n",
     "shape[0]: give a ramp either 'for' or 'rate', not both"),
    (BASE + "shape: [{stage: hold, users: 5}]\n",
     "unknown key 'shape[0].users' (known: stage, for)"),
    (BASE + "shape: [{stage: hold}, {stage: ramp, users: 5}]\n",
     "shape[0]: only the last stage may hold without 'for'"),
    (BASE + "shape: [{stage: spike, users: 200%}]\n", "shape[0]: a spike stage needs 'for'"),
    (BASE + "shape: [{stage: ramp, users: 5, for: never}]\n", "shape[0].for: bad duration"),
    (BASE + "storm: {at: 10s}\n", "storm needs 'at' (run times) and 'offline'"),
    (BASE + "storm: {at: [28s], offline: 5s}\n", "ends after the run (30s)"),
    (BASE + "storm: {at: [5s, 8s], offline: 5s}\n", "storms at 5s and 8s overlap"),
    (BASE + "storm: {at: [5s], offline: 5s, drop: gentle}\n", "storm.drop must be 'abrupt'"),
    (BASE + "offline: {fraction: 0.5, messages: 10, every: 5s}\n",
     "offline needs 'max_offline'"),
    (BASE + "offline: {fraction: 2, messages: 10, max_offline: 5s, every: 5s}\n",
     "offline.fraction must be a number between 0 and 1"),
    (BASE + "offline: {messages: 0, max_offline: 5s, every: 5s}\n",
     "offline.messages must be a positive integer"),
    (BASE + "churn: {online: 5s}\n", "churn needs 'offline'"),
    (BASE + "churn: {watch: 2000, online: 5s, offline: 1s}\n", "churn.watch must be at most 1000"),
    (BASE + "churn: {watch: 5, online: 0s, offline: 1s}\n", "churn.online must be longer than 0s"),
    (BASE + "name: ''\n", "name must be a non-empty string"),
])
def test_errors_are_one_clear_line(text: str, expected: str) -> None:
    assert expected in error(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(pm.ProfileError, match=r"nope.yaml: no such profile$"):
        pm.load(tmp_path / "nope.yaml")


def test_resolve_names_and_paths(tmp_path: Path) -> None:
    assert pm.resolve("steady", PROFILES_DIR) == PROFILES_DIR / "steady.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text(BASE)
    assert pm.resolve(str(own), PROFILES_DIR) == own
    assert pm.resolve("x/y.yaml", PROFILES_DIR) == Path("x/y.yaml")


def test_to_dict_is_json_ready() -> None:
    import json

    d = parse("shape: [{stage: spike, users: 150%, for: 5s}]\n").to_dict()
    json.dumps(d)
    assert d["shape"][0] == {"stage": "spike", "users": "150%", "for": 5.0, "rate": None}
