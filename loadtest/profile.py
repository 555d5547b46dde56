"""Load profiles: YAML files that say how many users do what, for how long, in which shape.

`load(path)` reads and validates a profile and returns a frozen `Profile`; anything wrong
raises `ProfileError` with one line that names the file, the key and the problem, e.g.
``profiles/x.yaml: users must be a positive integer``. See `loadtest/profiles/*.yaml` for
commented examples of every key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from msgctl import yamltext

MAX_BODY_BYTES = 16384  # the protocol's default body limit
MAX_GROUP = 1001  # 1000 members plus the caller

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


class ProfileError(Exception):
    """A profile that cannot be used; the message is one line fit for the user."""


def parse_duration(value: Any) -> float:
    """Seconds from 90, 2.5, '90s', '500ms', '5m', '1m30s', '1h'. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(value)
        return float(value)
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError(value)
    try:
        return parse_duration(float(text))
    except ValueError:
        pass
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            raise ValueError(value)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(value)
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 120 or seconds % 60:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"


@dataclass(frozen=True)
class Users:
    """A user count in a stage: absolute, or a percentage of the profile's `users`."""

    count: int | None = None
    percent: float | None = None

    def resolve(self, base: int) -> int:
        if self.count is not None:
            return self.count
        return round(base * (self.percent or 0) / 100)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class Stage:
    kind: str  # ramp | hold | spike
    users: Users | None = None  # ramp, spike: the target
    duration: float | None = None  # ramp: optional ('for'); hold: optional on the last; spike
    rate: float | None = None  # users started or stopped per second (ramp, spike)


@dataclass(frozen=True)
class Conversations:
    direct: int = 2  # 1:1 conversations per user: ring neighbours, half on each side
    groups: tuple[int, ...] = ()  # group sizes; each user is in one group of each size
    mix_direct: float = 1.0  # share of sends that go to 1:1 conversations
    mix_group: float = 0.0  # share that goes to groups


@dataclass(frozen=True)
class Storm:
    at: tuple[float, ...]  # run times (s) at which every user drops at once
    offline: float  # and all reconnect together this much later
    drop: str = "abrupt"  # abrupt: the socket is cut (like a network loss); close: a clean close


@dataclass(frozen=True)
class Offline:
    fraction: float  # share of users that go offline from time to time
    messages: int  # stay offline until this many messages wait for the device
    max_offline: float  # ... or at most this long
    every: float  # online time between two offline periods


@dataclass(frozen=True)
class Churn:
    watch: int  # users each user watches for presence
    online: tuple[float, float]  # min, max seconds connected
    offline: tuple[float, float]  # min, max seconds disconnected


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    users: int
    spawn_rate: float
    duration: float
    description: str = ""
    conversations: Conversations = field(default_factory=Conversations)
    message_sizes: tuple[tuple[int, float], ...] = ((256, 1.0),)
    think_time: tuple[float, float] = (1.0, 3.0)
    sync_ratio: float = 0.02
    send_timeout: float = 10.0
    shape: tuple[Stage, ...] = (Stage("ramp", Users(percent=100.0)),)
    storm: Storm | None = None
    offline: Offline | None = None
    churn: Churn | None = None

    def with_overrides(self, users: int | None = None, duration: float | None = None,
                       spawn_rate: float | None = None) -> Profile:
        changes: dict[str, Any] = {}
        if users is not None:
            changes["users"] = users
        if duration is not None:
            changes["duration"] = duration
        if spawn_rate is not None:
            changes["spawn_rate"] = spawn_rate
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["message_sizes"] = {str(size): weight for size, weight in self.message_sizes}
        d["shape"] = [{"stage": s.kind, "users": str(s.users) if s.users else None,
                       "for": s.duration, "rate": s.rate} for s in self.shape]
        return d


# -- validation --------------------------------------------------------------

_TOP = ("name", "description", "users", "spawn_rate", "duration", "conversations",
        "message_sizes", "think_time", "sync_ratio", "send_timeout", "shape", "storm",
        "offline", "churn")
_STAGE_KEYS = {"ramp": ("stage", "users", "for", "rate"), "hold": ("stage", "for"),
               "spike": ("stage", "users", "for", "rate")}


class _V:
    """Validation helpers that raise ProfileError prefixed with the file name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> ProfileError:
        return ProfileError(f"{self.source}: {message}")

    def mapping(self, value: Any, where: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(f"{where} must be a mapping" if where else
                            "a profile must be a mapping of settings")
        for key in value:
            if key not in known:
                name = f"{where}.{key}" if where else str(key)
                raise self.fail(f"unknown key '{name}' (known: {', '.join(known)})")
        return value

    def pos_int(self, value: Any, where: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{where} must be {'a positive' if minimum == 1 else 'an'} integer"
                            + ("" if minimum == 1 else f" >= {minimum}"))
        return value

    def number(self, value: Any, where: str, lo: float, hi: float | None = None,
               positive: bool = False) -> float:
        ok = (not isinstance(value, bool) and isinstance(value, int | float)
              and math.isfinite(value) and value >= lo and (hi is None or value <= hi)
              and (not positive or value > 0))
        if not ok:
            if positive:
                raise self.fail(f"{where} must be a positive number")
            span = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
            raise self.fail(f"{where} must be a number {span}")
        return float(value)

    def duration(self, value: Any, where: str, positive: bool = True) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise self.fail(f"{where}: bad duration {value!r} (use e.g. 30s, 500ms, 5m, "
                            "1m30s)") from None
        if positive and seconds <= 0:
            raise self.fail(f"{where} must be longer than 0s")
        return seconds

    def span(self, value: Any, where: str) -> tuple[float, float]:
        """{min: D, max: D}, or one duration for both."""
        if isinstance(value, Mapping):
            self.mapping(value, where, ("min", "max"))
            if "min" not in value or "max" not in value:
                raise self.fail(f"{where} needs both min and max")
            lo = self.duration(value["min"], f"{where}.min", positive=False)
            hi = self.duration(value["max"], f"{where}.max", positive=False)
            if lo > hi:
                raise self.fail(f"{where}.min must not exceed {where}.max")
            return lo, hi
        seconds = self.duration(value, where, positive=False)
        return seconds, seconds

    def users(self, value: Any, where: str) -> Users:
        if isinstance(value, str):
            m = _PERCENT.match(value.strip())
            if m:
                return Users(percent=float(m.group(1)))
        elif not isinstance(value, bool) and isinstance(value, int) and value >= 0:
            return Users(count=value)
        raise self.fail(f"{where} must be a user count (an integer >= 0) or a percentage "
                        "of users such as 150%")


def load(path: str | Path) -> Profile:
    """Read and validate the profile at `path`."""
    source = str(path)
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ProfileError(f"{source}: no such profile") from None
    except OSError as exc:
        raise ProfileError(f"{source}: cannot read ({exc.strerror})") from None
    return parse(text, source, default_name=p.stem)


def parse(text: str, source: str, default_name: str = "profile") -> Profile:
    v = _V(source)
    try:
        raw = yamltext.safe_load(text)
    except yamltext.YamlSyntaxError as exc:
        raise v.fail(str(exc)) from None
    if raw is None:
        raise v.fail("the profile is empty")
    data = v.mapping(raw, "", _TOP)
    for key in ("users", "spawn_rate", "duration"):
        if key not in data:
            raise v.fail(f"missing required key '{key}'")

    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise v.fail("name must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise v.fail("description must be a string")
    users = v.pos_int(data["users"], "users")
    spawn_rate = v.number(data["spawn_rate"], "spawn_rate", 0, positive=True)
    duration = v.duration(data["duration"], "duration")

    conversations = _conversations(v, data.get("conversations", {}))
    sizes = _message_sizes(v, data.get("message_sizes", {256: 1}))
    think = v.span(data.get("think_time", {"min": 1, "max": 3}), "think_time")
    sync_ratio = v.number(data.get("sync_ratio", 0.02), "sync_ratio", 0, 1)
    send_timeout = v.duration(data.get("send_timeout", 10), "send_timeout")
    shape = _shape(v, data.get("shape", [{"stage": "ramp", "users": "100%"}]))
    storm = _storm(v, data["storm"], duration) if data.get("storm") is not None else None
    offline = _offline(v, data["offline"]) if data.get("offline") is not None else None
    churn = _churn(v, data["churn"]) if data.get("churn") is not None else None
    return Profile(name=name.strip(), source=source, users=users, spawn_rate=spawn_rate,
                   duration=duration, description=description.strip(),
                   conversations=conversations, message_sizes=sizes, think_time=think,
                   sync_ratio=sync_ratio, send_timeout=send_timeout, shape=shape, storm=storm,
                   offline=offline, churn=churn)


def _conversations(v: _V, raw: Any) -> Conversations:
    data = v.mapping(raw, "conversations", ("direct", "groups", "mix"))
    direct = data.get("direct", 2)
    if isinstance(direct, bool) or not isinstance(direct, int) or direct < 0 or direct % 2:
        raise v.fail("conversations.direct must be an even integer >= 0 (1:1 conversations "
                     "per user, with ring neighbours on both sides)")
    groups_raw = data.get("groups", [])
    if not isinstance(groups_raw, list):
        raise v.fail("conversations.groups must be a list of group sizes")
    groups = []
    for i, size in enumerate(groups_raw):
        if isinstance(size, bool) or not isinstance(size, int) or not 3 <= size <= MAX_GROUP:
            raise v.fail(f"conversations.groups[{i}] must be a group size from 3 to {MAX_GROUP}")
        groups.append(size)
    mix_raw = data.get("mix", {"direct": 1.0 if direct else 0.0, "group": 0.0 if direct else 1.0})
    mix = v.mapping(mix_raw, "conversations.mix", ("direct", "group"))
    mix_direct = v.number(mix.get("direct", 0), "conversations.mix.direct", 0)
    mix_group = v.number(mix.get("group", 0), "conversations.mix.group", 0)
    if mix_direct + mix_group <= 0:
        raise v.fail("conversations.mix must give a positive share to direct or group")
    if mix_direct > 0 and not direct:
        raise v.fail("conversations.mix.direct is > 0 but conversations.direct is 0")
    if mix_group > 0 and not groups:
        raise v.fail("conversations.mix.group is > 0 but conversations.groups is empty")
    return Conversations(direct=direct, groups=tuple(groups), mix_direct=mix_direct,
                         mix_group=mix_group)


def _message_sizes(v: _V, raw: Any) -> tuple[tuple[int, float], ...]:
    if isinstance(raw, list):
        raw = {size: 1 for size in raw}
    if not isinstance(raw, Mapping) or not raw:
        raise v.fail("message_sizes must map body sizes in bytes to weights, e.g. "
                     "{64: 70, 1024: 30}")
    out = []
    for size, weight in raw.items():
        if isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BODY_BYTES:
            raise v.fail(f"message_sizes: size {size!r} must be from 1 to {MAX_BODY_BYTES} bytes")
        out.append((size, v.number(weight, f"message_sizes.{size}", 0, positive=True)))
    return tuple(sorted(out))


def _shape(v: _V, raw: Any) -> tuple[Stage, ...]:
    if not isinstance(raw, list) or not raw:
        raise v.fail("shape must be a non-empty list of stages (ramp, hold, spike)")
    stages = []
    for i, item in enumerate(raw):
        where = f"shape[{i}]"
        if not isinstance(item, Mapping) or "stage" not in item:
            raise v.fail(f"{where} must be a mapping with 'stage' (ramp, hold or spike)")
        kind = item["stage"]
        if kind not in _STAGE_KEYS:
            raise v.fail(f"{where}.stage must be one of ramp, hold, spike (got {kind!r})")
        v.mapping(item, where, _STAGE_KEYS[kind])
        users = v.users(item["users"], f"{where}.users") if "users" in item else None
        duration = v.duration(item["for"], f"{where}.for") if "for" in item else None
        rate = v.number(item["rate"], f"{where}.rate", 0, positive=True) if "rate" in item \
            else None
        if kind in ("ramp", "spike") and users is None:
            raise v.fail(f"{where}: a {kind} stage needs 'users'")
        if kind == "spike" and duration is None:
            raise v.fail(f"{where}: a spike stage needs 'for' (how long the spike lasts)")
        if kind == "ramp" and duration is not None and rate is not None:
            raise v.fail(f"{where}: give a ramp either 'for' or 'rate', not both")
        if kind == "hold" and duration is None and i != len(raw) - 1:
            raise v.fail(f"{where}: only the last stage may hold without 'for'")
        stages.append(Stage(kind, users, duration, rate))
    return tuple(stages)


def _storm(v: _V, raw: Any, duration: float) -> Storm:
    data = v.mapping(raw, "storm", ("at", "offline", "drop"))
    if "at" not in data or "offline" not in data:
        raise v.fail("storm needs 'at' (run times) and 'offline' (how long users stay away)")
    at_raw = data["at"] if isinstance(data["at"], list) else [data["at"]]
    if not at_raw:
        raise v.fail("storm.at must list at least one run time")
    at = tuple(sorted(v.duration(t, "storm.at") for t in at_raw))
    offline = v.duration(data["offline"], "storm.offline")
    for t in at:
        if t + offline >= duration:
            raise v.fail(f"storm.at: a storm at {format_duration(t)} plus "
                         f"{format_duration(offline)} offline ends after the run "
                         f"({format_duration(duration)})")
    for a, b in zip(at, at[1:], strict=False):
        if a + offline >= b:
            raise v.fail(f"storm.at: storms at {format_duration(a)} and "
                         f"{format_duration(b)} overlap (offline {format_duration(offline)})")
    drop = data.get("drop", "abrupt")
    if drop not in ("abrupt", "close"):
        raise v.fail("storm.drop must be 'abrupt' or 'close'")
    return Storm(at=at, offline=offline, drop=drop)


def _offline(v: _V, raw: Any) -> Offline:
    data = v.mapping(raw, "offline", ("fraction", "messages", "max_offline", "every"))
    for key in ("messages", "max_offline", "every"):
        if key not in data:
            raise v.fail(f"offline needs '{key}'")
    return Offline(fraction=v.number(data.get("fraction", 1.0), "offline.fraction", 0, 1),
                   messages=v.pos_int(data["messages"], "offline.messages"),
                   max_offline=v.duration(data["max_offline"], "offline.max_offline"),
                   every=v.duration(data["every"], "offline.every"))


def _churn(v: _V, raw: Any) -> Churn:
    data = v.mapping(raw, "churn", ("watch", "online", "offline"))
    for key in ("online", "offline"):
        if key not in data:
            raise v.fail(f"churn needs '{key}' (min and max seconds)")
    watch = v.pos_int(data.get("watch", 10), "churn.watch", minimum=0)
    if watch > 1000:
        raise v.fail("churn.watch must be at most 1000 (the protocol's watch limit)")
    online = v.span(data["online"], "churn.online")
    if online[1] <= 0:
        raise v.fail("churn.online must be longer than 0s")
    return Churn(watch=watch, online=online, offline=v.span(data["offline"], "churn.offline"))


def resolve(name_or_path: str, profiles_dir: Path) -> Path:
    """A path as given if it exists, else a bundled profile by name ('steady')."""
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    return profiles_dir / f"{name_or_path}.yaml"
