"""The router and a gateway's link decode and encode through the envelopes: a duplicate is
answered with the stored original or not at all (nothing made up), and a malformed record
on a gateway's channel costs only itself (no Kafka or Redis needed)."""

from __future__ import annotations

import time
from typing import Any

from runtime.adapters.cluster import envelopes as env
from runtime.cluster.gateway_link import GatewayLink
from runtime.cluster.router import StoreRouter
from runtime.conversations import Conversations
from runtime.core.presence import PresenceState
from runtime.ports import Conversation, Event, Message, TypingEvent

ORIGINAL = Message("c", 3, 2, "m3", "x", "alice", "phone", 99, "text", "hi")


class ConvStore:
    async def get_conversation(self, conv: str) -> Conversation | None:
        return Conversation(conv, ("alice", "bob"), "eu-west") if conv == "c" else None


class Store:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = {(m.conv, m.seq): m for m in messages}

    async def message(self, conv: str, seq: int) -> Message | None:
        return self.messages.get((conv, seq))


class Directory:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.redis = self

    def pipeline(self, transaction: bool = False) -> Directory:
        return self

    def publish(self, channel: str, payload: bytes) -> None:
        self.published.append((channel, payload))

    async def execute(self) -> None:
        return None

    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]:
        return {"gateway-1": list(users)}


def router(messages: list[Message]) -> tuple[StoreRouter, Directory]:
    directory = Directory()
    return StoreRouter("h:9092", "eu-west", Store(messages),  # type: ignore[arg-type]
                       Conversations(ConvStore()),  # type: ignore[arg-type]
                       directory), directory  # type: ignore[arg-type]


async def test_a_duplicate_is_answered_with_the_stored_original() -> None:
    r, directory = router([ORIGINAL])
    await r.route([env.DuplicateRecord("c", "alice", "x", 3, 2, "gateway-2")])
    [(channel, raw)] = directory.published
    assert channel == "gw:eu-west:gateway-2"
    assert env.decode_gateway(raw) == env.EventsBatch((env.RoutedEvent(
        env.DuplicateAnswer(ORIGINAL)),))


async def test_a_duplicate_without_a_stored_original_gets_no_made_up_answer() -> None:
    r, directory = router([])
    await r.route([env.DuplicateRecord("c", "alice", "x", 3, 2, "gateway-2")])
    # another sender's message at that seq is not this send's original either
    r, other = router([Message("c", 3, 2, "m3", "y", "bob", "pc", 99, "text", "hi")])
    await r.route([env.DuplicateRecord("c", "alice", "x", 3, 2, "gateway-2")])
    assert directory.published == [] and other.published == []


async def test_each_event_is_encoded_once_for_all_its_gateways() -> None:
    r, directory = router([])
    typing = env.TypingRecord(TypingEvent("c", "alice"))
    await r.route([typing])
    [(_, raw)] = directory.published
    assert typing.encode() in raw  # the same bytes, spliced into the batch
    assert env.decode_gateway(raw) == env.EventsBatch((env.RoutedEvent(typing, ("bob",)),))


class Ingest:
    def __init__(self) -> None:
        self.resolved: list[Message] = []

    def resolve(self, msg: Message) -> None:
        self.resolved.append(msg)


class Presence:
    def __init__(self) -> None:
        self.replies: list[tuple[str, tuple[PresenceState, ...]]] = []

    def on_reply(self, rid: str, states: tuple[PresenceState, ...]) -> None:
        self.replies.append((rid, states))

    def resync(self) -> None:
        self.replies.append(("resync", ()))


def link() -> tuple[GatewayLink, Ingest, Presence, list[Any]]:
    ingest, presence = Ingest(), Presence()
    seen: list[Any] = []

    def deliver(event: Event, users: list[str]) -> None:
        seen.append((event, users))

    def notify(sessions: frozenset[str], state: PresenceState) -> None:
        seen.append((sessions, state))

    async def catch_up() -> None:
        return None

    gl = GatewayLink(None, "eu-west", "gateway-1", ingest, presence,  # type: ignore[arg-type]
                     None, deliver, notify, catch_up)  # type: ignore[arg-type]
    return gl, ingest, presence, seen


def test_the_link_resolves_sends_delivers_events_and_skips_malformed_ones() -> None:
    gl, ingest, _, seen = link()
    m = Message("c", 4, 3, "m4", "z", "alice", "phone", 5, "text", "yo")
    raw = env.dumps({"t": "events", "events": [
        {"e": {"t": "dup", "conv": "c", "from": "alice", "cid": "x", "seq": 3, "prev": 2}},
        {"e": {"t": "msg", "m": {**m.to_wire(), "seq": "4"}}, "users": ["bob"]},
        {"e": {"t": "msg", "m": m.to_wire(), "gw": "gateway-1"}, "users": ["bob"]},
        {"e": {"t": "dup", "conv": "c", "from": "alice", "cid": "x", "seq": 3, "prev": 2,
               "m": ORIGINAL.to_wire()}},
    ]})
    gl.handle("gw:eu-west:gateway-1", raw)
    assert ingest.resolved == [m, ORIGINAL] and seen == [(m, ["bob"])]
    gl.handle("gw:eu-west:gateway-1", b"garbage")  # logged and counted, nothing else
    gl.handle("gw:eu-west:gateway-1", b'{"t":"unknown"}')
    assert ingest.resolved == [m, ORIGINAL] and len(seen) == 1


def test_the_link_hands_on_presence_changes_and_watch_replies() -> None:
    gl, _, presence, seen = link()
    state = PresenceState("bob", True, 1.5)
    gl.handle("gw:eu-west:gateway-1", env.PresenceChange(("s1",), state).encode())
    gl.handle("gw:eu-west:gateway-1", env.WatchReply("r1", (state,)).encode())
    gl.handle("presence.resync", b'{"t":"resync"}')
    assert seen == [(frozenset({"s1"}), state)]
    assert presence.replies == [("r1", (state,)), ("resync", ())]


def test_the_link_measures_the_queue_in_front_of_the_gateway() -> None:
    # msgctl_gateway_lag_seconds: the oldest message's send -> its batch read here, once
    # per batch that holds messages (the router's publish lag, one hop on)
    from runtime.metrics import METRICS

    def observed() -> tuple[float, float]:
        value = METRICS.registry.get_sample_value
        return (value("msgctl_gateway_lag_seconds_count") or 0.0,
                value("msgctl_gateway_lag_seconds_sum") or 0.0)

    gl, _, _, _ = link()
    now_ms = int(time.time() * 1000)
    old = Message("c", 1, 0, "m1", "a", "alice", "phone", now_ms - 3000, "text", "x")
    new = Message("c", 2, 1, "m2", "b", "alice", "phone", now_ms - 1000, "text", "y")
    count, total = observed()
    gl.handle("gw:eu-west:gateway-1", env.EventsBatch((
        env.RoutedEvent(env.MessageRecord(new, "gateway-1", "eu-west"), ("bob",)),
        env.RoutedEvent(env.MessageRecord(old, "gateway-1", "eu-west"), ("bob",)))).encode())
    gl.handle("gw:eu-west:gateway-1", env.PresenceChange(("s1",), PresenceState(
        "bob", True, 1.5)).encode())
    after, total_after = observed()
    assert after == count + 1
    assert 3.0 <= total_after - total < 3.0 + 5.0  # the oldest of the two, seconds ago
