"""The interfaces (ports) the runtimes are written against, and the records they pass.

Backend ports (`MessageStore`, `StateStore`, `EventLog`, `SessionDirectory`,
`PushProvider`): `adapters/embedded/` implements them on SQLite, memory and
local files, `adapters/cluster/` on Cassandra, Kafka and Redis. Service ports
(`IngestService`, `ReceiptService`, `PresencePort`, `ConversationService`,
`EventPublisher`): what the gateway and push call; the embedded runtimes
(`runtime.sequencer`, `runtime.presence`) and the cluster gateway's links
(`runtime.cluster.gateway_link`) implement them, so the gateway never knows
which family it runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.core.homes import HomeRecord
from runtime.core.presence import PresenceState
from runtime.core.watermarks import Watermark


class Unavailable(Exception):
    """A backend could not take or answer the request now; the client retries (a send
    with the same cid), and nothing was half done."""


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
    body: str = field(repr=False)  # never in a log line (a %r of the record)
    media: dict[str, Any] | None = None
    # the seq an old home first acknowledged it under, when a failover moved it here
    moved_from: int | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conv": self.conv, "seq": self.seq, "prev": self.prev, "mid": self.mid,
            "cid": self.cid, "from": self.sender, "from_device": self.from_device,
            "ts": self.ts, "kind": self.kind, "body": self.body,
        }
        if self.media is not None:
            out["media"] = self.media
        if self.moved_from is not None:
            out["moved_from"] = self.moved_from
        return out


@dataclass(frozen=True)
class Send:
    """One send as the sequencer receives it, whichever way it came."""

    conv: str
    cid: str
    sender: str
    device: str
    kind: str
    body: str = field(repr=False)  # never in a log line
    media: dict[str, Any] | None
    ts: int  # ms, when the gateway took it
    moved_from: int | None = None  # a reconciled orphan: the seq it was first acknowledged as



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
    token: str = field(repr=False)  # a device credential: never in a log line


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
    async def heads(self, convs: list[str]) -> dict[str, int]:
        """`head` of each of `convs` (0 for one with no message), in a bounded number of
        requests: a user in thousands of conversations must not cost a request each."""
        ...
    async def messages(self, conv: str, after: int, limit: int) -> list[Message]: ...
    async def message(self, conv: str, seq: int) -> Message | None: ...
    async def lookup_cid(self, conv: str, sender: str, cid: str) -> tuple[int, int] | None: ...


class HomeStore(Protocol):
    """Epochs of conversations that moved region (cluster family; runtime.core.homes)."""

    async def home_record(self, conv: str) -> HomeRecord | None: ...
    async def set_fenced(self, conv: str, epoch: int, last: int) -> None: ...


class StateStore(Protocol):
    """Per-device cursors, per-user watermarks and push tokens, durable."""

    async def device_state(self, user: str, device: str) -> DeviceState: ...
    async def register_device(self, user: str, device: str, baseline: dict[str, int]) -> None: ...
    async def set_cursor(self, user: str, device: str, conv: str, acked: int) -> None: ...
    async def watermark(self, user: str, conv: str) -> Watermark: ...
    async def set_watermark(self, user: str, conv: str, mark: Watermark) -> None: ...
    async def set_push_token(self, token: PushToken) -> None:
        """This device's token, taken from any other device or account that held it."""
        ...
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
    def subscribe(self, callback: Callable[[Event], object]) -> None: ...
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


class DeviceLocator(Protocol):
    """Whether a device has a live session (in any region): push skips those."""

    async def device_online(self, user: str, device: str) -> bool: ...


class PushProvider(Protocol):
    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]: ...
    def describe(self) -> str:
        """One line for the log: which service, which project or topic."""
        ...


# -- service ports: what the gateway (and push) call --------------------------------


class IngestService(Protocol):
    """Takes sends to the sequencer of the conversation's home."""

    ready: bool

    def submit(self, send: Send) -> asyncio.Future[Message]:
        """The future resolves with the message once it is durable (`sent`), or fails
        with `Unavailable` (the client retries with the same cid)."""
        ...

    async def head(self, conv: str) -> int:
        """The newest seq of `conv` known here."""
        ...

    async def heads(self, convs: list[str]) -> dict[str, int]:
        """`head` of each of `convs`, read from the store in batches (a session's baseline
        and resume)."""
        ...


class ReceiptService(Protocol):
    """Acks and reads of devices: cursors per device, watermarks per user."""

    async def device_cursors(self, user: str, device: str) -> DeviceState: ...
    async def ack(self, user: str, device: str, conv: str, seq: int) -> None: ...
    async def read(self, user: str, device: str, conv: str, seq: int) -> None: ...
    async def flush(self) -> None:
        """Write what waits for the next batch now (on shutdown)."""
        ...


class PresencePort(Protocol):
    """Sessions going online and offline, and watches on other users' presence."""

    def connect(self, user: str, session: str) -> None: ...
    def heartbeat(self, user: str, session: str) -> None: ...
    def disconnect(self, user: str, session: str) -> None: ...
    async def watch(self, session: str, users: tuple[str, ...]) -> list[PresenceState]: ...


class ConversationService(Protocol):
    """Conversations by id (cached; members never change after creation)."""

    async def get(self, conv: str) -> Conversation | None: ...
    async def create(self, conv: Conversation) -> Conversation: ...


class EventPublisher(Protocol):
    """Where the gateway publishes what is not sequenced (typing)."""

    def publish(self, event: Event) -> None: ...

