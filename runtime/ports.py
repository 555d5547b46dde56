"""Backend interfaces (ports) that the runtimes are written against.

`adapters/embedded/` implements them on SQLite, memory and local files; the
cluster adapters (Cassandra, Kafka, Redis, S3) implement the same ports, so
runtimes never know which family is behind them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.core.watermarks import Watermark


@dataclass(frozen=True)
class Conversation:
    conv: str
    members: tuple[str, ...]
    home: str
    title: str | None = None
    created_ts: int = 0


@dataclass(frozen=True)
class Message:
    conv: str
    seq: int
    prev: int
    mid: str
    cid: str
    sender: str
    from_device: str
    ts: int
    kind: str
    body: str
    media: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conv": self.conv, "seq": self.seq, "prev": self.prev, "mid": self.mid,
            "cid": self.cid, "from": self.sender, "from_device": self.from_device,
            "ts": self.ts, "kind": self.kind, "body": self.body,
        }
        if self.media is not None:
            out["media"] = self.media
        return out


@dataclass(frozen=True)
class Receipt:
    conv: str
    user: str
    kind: str  # "delivered" | "read"
    seq: int
    device: str = ""  # the device that moved it; it gets no read_sync for its own read


@dataclass(frozen=True)
class TypingEvent:
    conv: str
    user: str


Event = Message | Receipt | TypingEvent


@dataclass(frozen=True)
class PushToken:
    user: str
    device: str
    platform: str
    token: str


@dataclass
class DeviceState:
    """What the store knows of one device: whether it was seen before, and its cursors."""

    known: bool
    cursors: dict[str, int] = field(default_factory=dict)


class MessageStore(Protocol):
    """Conversations and their messages, durable."""

    async def create_conversation(self, conv: Conversation) -> Conversation: ...
    async def get_conversation(self, conv: str) -> Conversation | None: ...
    async def conversations_of(self, user: str) -> list[str]: ...
    async def head(self, conv: str) -> int: ...
    async def messages(self, conv: str, after: int, limit: int) -> list[Message]: ...
    async def message(self, conv: str, seq: int) -> Message | None: ...
    async def lookup_cid(self, conv: str, sender: str, cid: str) -> tuple[int, int] | None: ...


class StateStore(Protocol):
    """Per-device cursors, per-user watermarks and push tokens, durable."""

    async def device_state(self, user: str, device: str) -> DeviceState: ...
    async def register_device(self, user: str, device: str, baseline: dict[str, int]) -> None: ...
    async def set_cursor(self, user: str, device: str, conv: str, acked: int) -> None: ...
    async def watermark(self, user: str, conv: str) -> Watermark: ...
    async def set_watermark(self, user: str, conv: str, mark: Watermark) -> None: ...
    async def set_push_token(self, token: PushToken) -> None: ...
    async def push_tokens(self, users: list[str]) -> list[PushToken]: ...
    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        """Forget a device's token; with `token`, only while it is still that one."""
        ...


class EventLog(Protocol):
    """The durable, ordered log of sequenced events.

    `append` returns only once the messages are durable (SQLite commit, Kafka
    acks=all): the gateway's `sent` depends on it.
    """

    async def append(self, messages: list[Message]) -> None: ...
    def subscribe(self, callback: Callable[[Event], None]) -> None: ...
    def publish(self, event: Event) -> None: ...


class SessionDirectory(Protocol):
    """Live sessions: user -> device -> gateway."""

    def register(self, user: str, device: str, session: str, gateway: str) -> None: ...
    def unregister(self, user: str, device: str, session: str) -> None: ...
    async def settle(self, timeout: float) -> bool:
        """Wait until registrations made so far are visible to routers."""
        ...
    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]: ...
    async def device_online(self, user: str, device: str) -> bool: ...


class PushProvider(Protocol):
    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]: ...

