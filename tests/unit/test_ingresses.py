"""Which region's ingress takes a send: the conversation's home (no Kafka needed)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from runtime.adapters.cluster import envelopes as env
from runtime.cluster.gateway_link import Ingresses
from runtime.conversations import Conversations
from runtime.ports import Conversation, Message, Send, Unavailable


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class ConvStore:
    def __init__(self, homes: dict[str, str]) -> None:
        self.homes = homes

    async def get_conversation(self, conv: str) -> Conversation | None:
        home = self.homes.get(conv)
        return None if home is None else Conversation(conv, ("a", "b"), home, None, 0)


def ingresses(homes: dict[str, str]) -> tuple[Ingresses, FakeProducer, FakeProducer]:
    local, peer = FakeProducer(), FakeProducer()
    ing = Ingresses(local, "eu-west", {"us-east": "h:9092"}, Conversations(ConvStore(homes)))  # type: ignore
    ing._producers["us-east"] = peer  # type: ignore[assignment]
    return ing, local, peer


async def test_a_send_goes_to_its_conversations_home_region() -> None:
    ing, local, peer = ingresses({"c-east": "us-east", "c-west": "eu-west"})
    await ing.send("c-east", b"x")
    await ing.send("c-west", b"y")
    await ing.send("c-unknown", b"z")  # not found anywhere: the gateway refused it already
    assert [(t, k) for t, k, _ in peer.sent] == [("msg.ingress", b"c-east")]
    assert [k for _, k, _ in local.sent] == [b"c-west", b"c-unknown"]


async def test_a_home_the_topology_does_not_name_is_unavailable() -> None:
    ing, _, _ = ingresses({"c": "ap-south"})
    with pytest.raises(Unavailable, match="ap-south"):
        await ing.send("c", b"x")


def test_the_send_names_the_region_waiting_for_its_sent() -> None:
    send = Send("c", "m1", "alice", "phone", "text", "hi", None, 1)
    raw = env.send_request(send, "gateway-1", "eu-west")
    record: dict[str, Any] = env.loads(raw)
    assert record["rg"] == "eu-west" and record["gw"] == "gateway-1"
    assert env.SendRequest.decode(raw) == env.SendRequest(send, "gateway-1", "eu-west")
    event = env.loads(env.message_event(Message("c", 1, 0, "m", "m1", "alice", "phone", 1,
                                                "text", "hi"), "gateway-1", "eu-west"))
    assert event["rg"] == "eu-west"
    with pytest.raises(ValueError, match="'rg'"):
        env.SendRequest.from_obj({**record, "rg": ""})


class FakePipe:
    def __init__(self, out: list[tuple[str, dict]]) -> None:
        self.out = out

    def publish(self, channel: str, payload: str) -> None:
        self.out.append((channel, env.loads(payload)))

    async def execute(self) -> None:
        return None


class FakeDirectory:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []
        self.redis = self

    def pipeline(self, transaction: bool = False) -> FakePipe:
        return FakePipe(self.published)

    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]:
        return {"gateway-1": [u for u in users if u == "b"]}


async def test_the_router_answers_the_sender_only_in_the_senders_region() -> None:
    from runtime.cluster.router import StoreRouter

    directory = FakeDirectory()
    router = StoreRouter("h:9092", "eu-west", None,  # type: ignore[arg-type]
                         Conversations(ConvStore({"c": "us-east"})),  # type: ignore
                         directory)  # type: ignore[arg-type]
    m = Message("c", 1, 0, "m", "m1", "a", "phone", 1, "text", "hi")
    # sent from eu-west's gateway-2, sequenced in us-east, read here mirrored
    await router.route([env.MessageRecord(m, "gateway-2", "eu-west")])
    # sent from us-east's gateway-2: here only member b's gateway gets it
    await router.route([env.MessageRecord(replace(m, seq=2, prev=1, cid="m2"), "gateway-2",
                                          "us-east")])
    channels = [c for c, _ in directory.published]
    assert channels == ["gw:eu-west:gateway-1", "gw:eu-west:gateway-2", "gw:eu-west:gateway-1"]
    # what the gateways get decodes as a batch of that message, for the users on each
    batch = env.decode_gateway(env.dumps(directory.published[0][1]))
    assert isinstance(batch, env.EventsBatch)
    assert batch.items == (env.RoutedEvent(env.MessageRecord(m, "gateway-2", "eu-west"),
                                           ("b",)),)
