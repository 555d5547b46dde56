"""The one-region cluster stack as a user sees it: separate processes, two gateways."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid

import pytest
import redis.asyncio as aioredis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from msgctl.supervisor import priority
from msgctl.topology import PATH_NICE
from runtime.adapters.cluster.kafka import EVENTS, INGRESS, SEQ_STATE
from runtime.adapters.cluster.redis_bus import route_key
from runtime.cluster.feed import FETCH_WAIT_MS, feed_config
from runtime.core.fetchwatch import FetchWatch
from runtime.core.seqsnapshot import OFFSETS_KEY, head_key, parse_offsets
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


def test_the_message_path_runs_at_a_higher_cpu_priority(cluster_deployment: Deployment) -> None:
    """Alone on its host, the region's event loops and Cassandra run at PATH_NICE (their
    scheduling group and main thread), the rest at the default; a supervisor that may not
    lower a nice value leaves every program at the default."""
    rows = cluster_deployment.status()["runtimes"]
    favoured = PATH_NICE if os.geteuid() == 0 else 0
    path = {"cassandra.local", "sequencer.local", "gateway-1.local", "gateway-2.local"}
    for r in rows:
        group, thread = priority.read(r["pid"])
        want = favoured if r["program"] in path else 0
        assert thread == want, r["program"]
        assert group in (want, None), r["program"]  # None: a kernel without autogroup


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
            # and in its gateway's route hash, where the router looks
            assert await r.hexists(route_key("local", f"gateway-{i % 2 + 1}"), user)
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


def read_all(dep: Deployment, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every committed record of `topic`, oldest first per partition."""
    consumer = Consumer(engines.kafka_config(
        dep.home, f"127.0.0.1:{dep.port + 20}", **{
            "group.id": uid("test-reader"), "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True}))
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending, out = set(parts), []
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for rec in consumer.consume(1000, 1.0):
                if rec.error() is not None:
                    assert rec.error().code() == KafkaError._PARTITION_EOF, rec.error()
                    pending.discard(rec.partition())
                else:
                    out.append((rec.key(), rec.value()))
        assert not pending, f"{topic} not read to its end"
        return out
    finally:
        consumer.close()


def ingress_ends(dep: Deployment) -> dict[int, int]:
    consumer = Consumer(engines.kafka_config(dep.home, f"127.0.0.1:{dep.port + 20}",
                                             **{"group.id": uid("test-ends")}))
    try:
        parts = consumer.list_topics(INGRESS, timeout=30).topics[INGRESS].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(INGRESS, p), 30)[1]
                for p in parts}
    finally:
        consumer.close()


async def test_the_sequencer_input_offsets_commit_with_its_results(
        cluster_deployment: Deployment) -> None:
    """The ingress offsets go into each transaction as a `msg.seq-state` record (not
    through the consumer group): a restarted sequencer resumes after what it has
    sequenced, so nothing sent before the restart is sequenced twice."""
    dep = cluster_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await Client.open(dep.gateway_url(0), dep.token(alice))
    conv = (await a.create([bob]))["conv"]
    for i in range(3):
        await a.send_text(conv, f"c{i}")
    records = [v for k, v in read_all(dep, SEQ_STATE) if k == OFFSETS_KEY]
    assert records, "no offsets record in msg.seq-state"
    offsets = parse_offsets(json.loads(records[-1]))
    ends = ingress_ends(dep)
    assert offsets and all(0 < o <= ends[p] for p, o in offsets.items()), (offsets, ends)
    msgctl("restart", "sequencer.local", "--home", str(dep.home), timeout=120)
    new = await a.send_text(conv, "c3", timeout=20)
    assert (new["seq"], new["prev"]) == (4, 3)
    # one event per send: the three before the restart were not read and sequenced again
    # (that would have added `duplicate` events to the conversation's key)
    deadline = time.monotonic() + 20
    while True:
        events = [v for k, v in read_all(dep, EVENTS) if k == conv.encode()]
        if len(events) >= 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(events) == 4, len(events)
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


def test_a_healthy_consumer_group_reports_its_partitions_fetching(
        cluster_deployment: Deployment) -> None:
    """The router and the push feed end their process when an assigned partition stops
    fetching in a steady group (runtime.core.fetchwatch). On the real broker, a static
    group member of `msg.events` as theirs reports a steady group and fetching
    partitions, so the watch never fires on a healthy one, even at a limit of 2 s; and
    neither the router nor push has logged it on this session's deployment."""
    dep = cluster_deployment
    reports: list[tuple[float, str]] = []
    group = uid("test-watch")
    consumer = Consumer(engines.kafka_config(dep.home, f"127.0.0.1:{dep.port + 20}", **{
        "group.id": group, "group.instance.id": group, "session.timeout.ms": 10_000,
        "isolation.level": "read_committed", "fetch.wait.max.ms": 100,
        "statistics.interval.ms": 500,
        "stats_cb": lambda r: reports.append((time.monotonic(), r))}))
    try:
        consumer.subscribe([EVENTS])
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            consumer.poll(0.2)
    finally:
        consumer.close()
    watch = FetchWatch(limit=2)
    assert all(watch.observe_json(r, t) is None for t, r in reports), reports[-1][1]
    last = json.loads(reports[-1][1])
    assert last["cgrp"]["join_state"] == "steady" and last["cgrp"]["assignment_size"] >= 1
    parts = last["topics"][EVENTS]["partitions"]
    assert parts["0"]["desired"] and parts["0"]["fetch_state"] == "active", parts["0"]
    for program in ("sequencer.local", "push.local"):
        text = (dep.home / "logs" / f"{program}.log").read_text()
        assert "stopped fetching" not in text, program


def test_the_push_feed_reads_many_commits_in_one_fetch(cluster_deployment: Deployment) -> None:
    """Push's feed (`feed_config`) waits for 64 KiB of committed events or 100 ms rather
    than being answered at every commit: 100 small transactions, as fast as they commit,
    reach it whole, in about one fetch per 100 ms (answered at each commit, it fetched
    about once per transaction)."""
    dep = cluster_deployment
    bootstrap = f"127.0.0.1:{dep.port + 20}"
    topic = uid("test-feed")
    admin = AdminClient(engines.kafka_config(dep.home, bootstrap))
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    fetches: list[int] = []

    def on_stats(report: str) -> None:
        brokers = json.loads(report)["brokers"].values()
        fetches.append(sum(b["req"].get("Fetch", 0) for b in brokers if b["nodeid"] >= 0))

    settings = feed_config(bootstrap, uid("test-feed")) | engines.kafka_config(
        dep.home, bootstrap, **{"auto.offset.reset": "earliest", "enable.auto.commit": False,
                                "statistics.interval.ms": 100, "stats_cb": on_stats})
    consumer = Consumer(settings)
    producer = Producer(engines.kafka_config(dep.home, bootstrap, **{
        "transactional.id": topic, "linger.ms": 1}))
    commits = 100
    got: list[float] = []
    done = threading.Event()

    def read() -> None:
        deadline = time.monotonic() + 60
        while len(got) < commits and time.monotonic() < deadline:
            got.extend(time.monotonic() for r in consumer.consume(100, 0.05)
                       if r.error() is None)
        consumer.poll(0.3)  # one more statistics report
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    try:
        producer.init_transactions(30)
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while not consumer.assignment() or not fetches:
            assert time.monotonic() < deadline, "no partition assigned, or no statistics"
            consumer.poll(0.1)
        before, started = fetches[-1], time.monotonic()
        reader.start()
        for _ in range(commits):
            producer.begin_transaction()
            producer.produce(topic, b"x" * 200, b"k")
            producer.commit_transaction(30)
        last_commit = time.monotonic()
        assert done.wait(90)
        elapsed = time.monotonic() - started
        assert len(got) == commits
        # read within the fetch's wait of the last commit (and a busy machine's slack)
        assert got[-1] - last_commit < FETCH_WAIT_MS / 1000 + 1.0
        made = fetches[-1] - before
        # about one fetch per FETCH_WAIT_MS whatever the commits' pace (answered at each
        # commit: one per transaction, 100 in about a second here)
        bound = elapsed * 1000 / FETCH_WAIT_MS * 1.5 + 5
        assert 0 < made <= bound, (made, round(elapsed, 2), round(last_commit - started, 2))
    finally:
        if reader.is_alive():  # the consumer is the reader's until it is done
            done.wait(90)
        consumer.close()
        admin.delete_topics([topic])
