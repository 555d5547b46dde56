"""The one-region cluster stack as a user sees it: separate processes, two gateways."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis.asyncio as aioredis
from confluent_kafka import Producer

from runtime.adapters.cluster.kafka import SEQ_STATE
from runtime.core.seqsnapshot import head_key
from runtime.core.sequencing import sender_key
from tests import engines
from tests.conftest import Deployment, msgctl
from tests.wsclient import Client

pytestmark = pytest.mark.e2e

PROCESSES = {"kafka.local", "cassandra.local", "redis.local", "s3.local", "sequencer.local",
             "presence.local", "push.local", "gateway-1.local", "gateway-2.local"}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_status_lists_each_engine_and_runtime_as_its_own_process(
        cluster_deployment: Deployment) -> None:
    rows = cluster_deployment.status()["runtimes"]
    assert {r["program"] for r in rows} == PROCESSES
    assert all(r["state"] == "RUNNING" for r in rows), rows
    pids = [r["pid"] for r in rows]
    assert len(set(pids)) == len(pids) and None not in pids
    kinds = {r["program"]: r["kind"] for r in rows}
    assert kinds["kafka.local"] == "engine" and kinds["gateway-1.local"] == "runtime"


async def test_devices_on_both_gateways_get_every_message(
        cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a1 = await Client.open(dep.gateway_url(0), dep.token(alice, "phone"))
    a2 = await Client.open(dep.gateway_url(1), dep.token(alice, "laptop"))
    b1 = await Client.open(dep.gateway_url(0), dep.token(bob, "phone"))
    b2 = await Client.open(dep.gateway_url(1), dep.token(bob, "tablet"))
    conv = (await a1.create([bob]))["conv"]
    for i in range(10):
        sender = (a1, a2, b1, b2)[i % 4]
        await sender.send_text(conv, f"c{i}", f"m{i}")
    everyone = {"a1": a1, "a2": a2, "b1": b1, "b2": b2}
    for name, device in everyone.items():
        own = {f"c{i}" for i in range(10) if ("a1", "a2", "b1", "b2")[i % 4] == name}
        got = await device.wait_msgs(conv, 10 - len(own))
        assert [m["seq"] for m in got] == [i + 1 for i in range(10) if f"c{i}" not in own]
        assert {m["cid"] for m in got}.isdisjoint(own)  # its own sends came back as `sent`
    for c in everyone.values():
        await c.close()


async def test_hello_means_the_session_is_routable(cluster_deployment: Deployment) -> None:
    """A router that looks a user up right after their hello finds the session (a typing
    event sent in that window used to go nowhere)."""
    dep = cluster_deployment
    r = aioredis.Redis.from_url(engines.redis_url(dep.home, dep.port + 25),
                                **engines.redis_kwargs(dep.home, dep.port + 25))
    clients = []
    try:
        for i in range(12):
            user = uid("fresh")
            c = await Client.open(dep.gateway_url(i % 2), dep.token(user, "phone"))
            clients.append(c)
            fields = await r.hkeys(f"sessions:{user}")
            assert f"phone|{c.hello['session']}".encode() in fields
    finally:
        await r.aclose()
        for c in clients:
            await c.close()


async def test_sequencer_restart_restores_its_state(cluster_deployment: Deployment) -> None:
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    conv = (await a.create([bob]))["conv"]
    first = [await a.send_text(conv, f"c{i}") for i in range(3)]
    msgctl("restart", "sequencer.local", "--home", str(dep.home), timeout=120)
    # a retry of an acknowledged cid gets its original seq; a new one continues the chain
    again = await a.send_text(conv, "c1", timeout=20)
    assert (again["seq"], again["prev"]) == (first[1]["seq"], first[1]["prev"])
    new = await a.send_text(conv, "c3", timeout=20)
    assert (new["seq"], new["prev"]) == (4, 3)
    await a.close()


async def test_a_sequencer_state_log_that_lost_its_tail_never_reuses_a_seq(
        cluster_deployment: Deployment) -> None:
    """A machine crash can cost the broker the unsynced tail of `msg.seq-state` while
    Cassandra kept the messages. Simulated by appending an older snapshot of the
    conversation (head 1 of 3): the restarted sequencer must continue after the stored
    head, and a retry of an acknowledged message keeps its seq."""
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    conv = (await a.create([bob]))["conv"]
    first = [await a.send_text(conv, f"c{i}") for i in range(3)]
    assert [m["seq"] for m in first] == [1, 2, 3]
    # the router has stored all three before the state goes back
    deadline = time.monotonic() + 30
    while True:
        status, body = dep.get(f"/v1/conversations/{conv}/messages", dep.token(bob))
        if status == 200 and len(body["msgs"]) == 3:
            break
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.2)
    stale = {"head": 1, "recent": [[sender_key(alice, "c0"), 1, 0]]}
    producer = Producer(engines.kafka_config(dep.home, f"127.0.0.1:{dep.port + 20}"))
    producer.produce(SEQ_STATE, key=head_key(conv), value=json.dumps(stale).encode())
    assert producer.flush(30) == 0
    msgctl("restart", "sequencer.local", "--home", str(dep.home), timeout=120)
    again = await a.send_text(conv, "c2", timeout=20)
    assert (again["seq"], again["prev"]) == (3, 2)
    new = await a.send_text(conv, "c3", timeout=20)
    assert (new["seq"], new["prev"]) == (4, 3)
    status, body = dep.get(f"/v1/conversations/{conv}/messages", dep.token(bob))
    assert [(m["seq"], m["cid"]) for m in body["msgs"]][:3] == [(1, "c0"), (2, "c1"),
                                                                (3, "c2")]
    await a.close()
