"""Two regions on real engines: devices in different regions converse as if on one gateway.

us-east on 127.0.0.1 and eu-west on 127.0.0.2, each with its own Kafka, Cassandra
data center and Redis, MirrorMaker 2 between them (the `two_regions` fixture).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid

import psutil
import pytest

from msgctl.home import Home
from msgctl.infra import replication
from tests.conftest import Regions
from tests.wsclient import Client, assert_chain

# the module's two-region stack starts inside the first test's time (about 2 min)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EAST, WEST = "us-east", "eu-west"
CROSS = 15.0  # seconds allowed for anything that crosses the link (a loaded 2-core machine)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def connect(dep: Regions, region: str, user: str, device: str = "phone") -> Client:
    return await Client.open(dep.url(region), dep.token(user, device))


async def link_until(dep: Regions, source: str, *, stalled: bool,
                     seconds: float = 30) -> dict:
    """The link out of `source` as `msgctl status` shows it, once `stalled` is as asked
    (or when `seconds` ran out)."""
    deadline = time.monotonic() + seconds
    while True:
        link = next(x for x in dep.status()["replication"] if x["source"] == source)
        if link["stalled"] == stalled or time.monotonic() > deadline:
            return link
        await asyncio.sleep(1)


def program_pid(dep: Regions, program: str) -> int:
    pids = [r["pid"] for r in dep.status()["runtimes"] if r["program"] == program]
    assert pids and pids[0], pids
    return pids[0]


def test_status_shows_every_region_and_a_healthy_link_each_way(two_regions: Regions) -> None:
    status = two_regions.status()
    rows = {r["program"]: r for r in status["runtimes"]}
    for region in (EAST, WEST):
        for part in ("kafka", "cassandra", "redis", "mirror", "sequencer", "presence", "push",
                     "gateway-1"):
            assert rows[f"{part}.{region}"]["state"] == "RUNNING", rows[f"{part}.{region}"]
    links = {(x["source"], x["target"]): x for x in status["replication"]}
    assert set(links) == {(EAST, WEST), (WEST, EAST)}
    for link in links.values():
        assert not link["stalled"] and link["error"] == "", link
        assert link["heartbeat_age_ms"] is not None and link["heartbeat_age_ms"] < 10_000


def test_a_mirror_warm_up_goes_through_mirror_maker_and_leaves_short_lived_topics(
        two_regions: Regions) -> None:
    """What `up` does to warm each MirrorMaker 2 (here without the JIT watch, which the
    supervisor adds): transactions into us-east's `msgctl.warmup.mirror`, read back from
    their copies in eu-west; both topics keep their records ten minutes, and no consumer
    group is left."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from msgctl.infra import warmup
    from msgctl.supervisor.program import Program

    plan = json.loads(Home(two_regions.home).plan_file.read_text())
    spec = next(Program.from_dict(p) for p in plan["programs"]
                if p["name"] == f"mirror.{WEST}").probe_spec
    assert set(spec["sources"]) == {EAST}
    loaded, stop = threading.Event(), threading.Event()

    def stop_soon_after_the_first_copy() -> None:
        if loaded.wait(60):
            time.sleep(3)
        stop.set()

    threading.Thread(target=stop_soon_after_the_first_copy, daemon=True).start()
    out = warmup.mirror(spec["bootstrap"], spec["sources"], 90.0, spec.get("security"),
                        stop, loaded=loaded)
    assert loaded.is_set() and out["transactions"] > 0, out
    assert 0 < out["mirrored"] <= out["produced"], out
    for bootstrap, topic in ((spec["sources"][EAST], warmup.TOPIC_MIRROR),
                             (spec["bootstrap"], f"{EAST}.{warmup.TOPIC_MIRROR}")):
        admin = AdminClient(warmup._kafka_conf(bootstrap, spec.get("security")))
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["retention.ms"].value == "600000", topic
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    assert warmup.MIRROR_GROUP not in groups


def test_the_mirrors_keep_no_offset_syncs(two_regions: Regions) -> None:
    """MirrorMaker 2 writes no offset syncs into the Kafka it reads: they serve only to
    translate consumer group offsets, which msgctl does not mirror, and cost the source
    broker about a produce request for each transaction mirrored."""
    from confluent_kafka.admin import AdminClient

    from tests.engines import kafka_config

    for region in (Home(two_regions.home).deployment() or {})["regions"]:
        admin = AdminClient(kafka_config(two_regions.home, region["engines"]["kafka"]))
        topics = set(admin.list_topics(timeout=10).topics)
        assert f"{EAST}.msg.events" in topics or f"{WEST}.msg.events" in topics, topics
        assert not [t for t in topics if t.startswith("mm2-offset-syncs")], topics


def test_a_lag_reader_keeps_its_kafka_connections_between_reads(two_regions: Regions) -> None:
    """The benchmarks and drills sample the lag every half second or two: over kept
    clients, not new ones (each a TLS handshake on the brokers under test)."""
    regions = (Home(two_regions.home).deployment() or {})["regions"]
    ports = {int(hp.rsplit(":", 1)[1]) for r in regions
             for hp in r["engines"]["kafka"].split(",")}
    me = psutil.Process()

    def kafka_connections() -> set[int]:
        return {c.laddr.port for c in me.net_connections(kind="tcp")
                if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED}

    others = kafka_connections()  # any the process held before: not the reader's
    with replication.LagReader(regions) as reader:
        for _ in range(2):
            reader.links()
        held = kafka_connections() - others
        for _ in range(3):
            links = reader.links()
            assert not [x for x in links if x.stalled or x.error], links
        assert held and kafka_connections() - others == held
    assert not kafka_connections() & held


async def test_a_conversation_across_regions_keeps_one_order_with_receipts(
        two_regions: Regions) -> None:
    dep = two_regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    b_laptop = await connect(dep, EAST, bob, "laptop")
    created = await a.create([bob])
    conv = created["conv"]
    assert created["home"] == EAST

    async def burst(client: Client, who: str) -> list[dict]:
        return [await client.send_text(conv, f"{who}{i}", f"{who} {i}", timeout=CROSS)
                for i in range(15)]

    sent_a, sent_b = await asyncio.gather(burst(a, "a"), burst(b, "b"))
    seqs = sorted(s["seq"] for s in sent_a + sent_b)
    assert seqs == list(range(1, 31))  # one sequence for both regions: no gap, no repeat
    for sent in (sent_a, sent_b):  # each sender's own sends in the order sent
        assert [s["seq"] for s in sent] == sorted(s["seq"] for s in sent)
    await b.wait_msgs(conv, 15, timeout=CROSS)  # alice's, from the other region
    got_a = await a.wait_msgs(conv, 15, timeout=CROSS)
    await b.quiet(0.5)
    assert [m["cid"] for m in b.msgs(conv)] == [f"a{i}" for i in range(15)]
    assert [m["seq"] for m in got_a] == [s["seq"] for s in sent_b]
    laptop = await b_laptop.wait_msgs(conv, 30, timeout=CROSS)  # bob's other device: all
    assert_chain(laptop)
    # receipts go to the home region and come back to the sender's region
    await b.send({"t": "ack", "conv": conv, "seq": 30})
    r = await a.wait_t("receipt", conv=conv, kind="delivered", timeout=CROSS)
    assert (r["user"], r["seq"]) == (bob, 30)
    await b.send({"t": "read", "conv": conv, "seq": 30})
    rd = await a.wait_t("receipt", conv=conv, kind="read", timeout=CROSS)
    assert (rd["user"], rd["seq"]) == (bob, 30)
    rs = await b_laptop.wait_t("read_sync", conv=conv, timeout=CROSS)
    assert rs["seq"] == 30
    for c in (a, b, b_laptop):
        await c.close()


async def test_a_group_homed_in_eu_west_orders_concurrent_senders_of_both_regions(
        two_regions: Regions) -> None:
    dep = two_regions
    users = [uid("u") for _ in range(4)]
    regions = [WEST, EAST, WEST, EAST]
    clients = [await connect(dep, r, u) for r, u in zip(regions, users, strict=True)]
    created = await clients[0].create(users[1:])
    conv = created["conv"]
    assert created["home"] == WEST

    async def burst(i: int) -> list[dict]:
        return [await clients[i].send_text(conv, f"{i}-{k}", timeout=CROSS) for k in range(8)]

    sent = await asyncio.gather(*(burst(i) for i in range(4)))
    assert sorted(s["seq"] for ss in sent for s in ss) == list(range(1, 33))
    order: list[str] | None = None
    for i, c in enumerate(clients):
        others = await c.wait_msgs(conv, 24, timeout=CROSS)
        assert not {m["cid"] for m in others} & {f"{i}-{k}" for k in range(8)}
        # merged with its own sends, every device sees the one order of the home region
        mine = {s["seq"]: f"{i}-{k}" for k, s in enumerate(sent[i])}
        merged = sorted([(m["seq"], m["cid"]) for m in others] + list(mine.items()))
        assert [s for s, _ in merged] == list(range(1, 33))
        if order is None:
            order = [cid for _, cid in merged]
        assert [cid for _, cid in merged] == order
    for c in clients:
        await c.close()


async def test_presence_and_typing_cross_regions(two_regions: Regions) -> None:
    dep = two_regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    reply = await a.request({"t": "watch", "users": [bob]})
    assert reply["state"] == "offline"
    b = await connect(dep, WEST, bob)
    on = await a.wait_t("presence", user=bob, state="online", timeout=CROSS)
    assert on["last_active"] > 0
    # a watcher that starts now, in the other region, is answered from what was mirrored
    c = await connect(dep, EAST, uid("carol"))
    late = await c.request({"t": "watch", "users": [bob]})
    assert late["state"] == "online"
    conv = (await a.create([bob]))["conv"]
    await b.send({"t": "typing", "conv": conv})
    t = await a.wait_t("typing", conv=conv, timeout=CROSS)
    assert t["user"] == bob
    await b.close()
    off = await a.wait_t("presence", user=bob, state="offline", timeout=CROSS)
    assert off["last_active"] >= on["last_active"]
    for x in (a, c):
        await x.close()


async def test_a_device_moving_region_resumes_after_its_last_ack(two_regions: Regions) -> None:
    dep = two_regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    conv = (await a.create([bob]))["conv"]
    for i in range(6):
        await a.send_text(conv, f"m{i}")
    await b.wait_msgs(conv, 6, timeout=CROSS)
    await b.send({"t": "ack", "conv": conv, "seq": 4})
    await a.wait_t("receipt", conv=conv, kind="delivered", timeout=CROSS)
    await b.close()
    for i in range(6, 9):
        await a.send_text(conv, f"m{i}")
    # the same phone now connects to the other region
    b = await connect(dep, EAST, bob)
    await b.wait_msgs(conv, 5, timeout=CROSS)
    await b.quiet(1.0)
    got = b.msgs(conv)
    assert [m["seq"] for m in got] == [5, 6, 7, 8, 9]  # after its ack: no gap, no repeat
    assert_chain(got, start_prev=4)
    # and back again, live traffic included
    await b.send({"t": "ack", "conv": conv, "seq": 9})
    await a.wait_t("receipt", conv=conv, kind="delivered", seq=9, timeout=CROSS)
    await b.close()
    await asyncio.sleep(0.5)  # the cursor reaches the other data center
    b = await connect(dep, WEST, bob)
    await a.send_text(conv, "live")
    live = await b.wait_msgs(conv, 1, timeout=CROSS)
    await b.quiet(1.0)
    assert [m["seq"] for m in b.msgs(conv)] == [10] and live[0]["prev"] == 9
    await a.close()
    await b.close()


async def test_a_stalled_link_is_marked_and_catches_up(two_regions: Regions) -> None:
    dep = two_regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    conv = (await a.create([bob]))["conv"]
    mirror = program_pid(dep, f"mirror.{WEST}")  # pulls us-east into eu-west
    os.kill(mirror, signal.SIGSTOP)
    try:
        await a.send_text(conv, "while-stalled")
        link = await link_until(dep, EAST, stalled=True)
        assert link["stalled"] and link["lag_ms"] > 0, link
        assert not b.msgs(conv)
    finally:
        os.kill(mirror, signal.SIGCONT)
    got = await b.wait_msgs(conv, 1, timeout=60)
    assert got[0]["cid"] == "while-stalled"
    link = await link_until(dep, EAST, stalled=False)
    assert not link["stalled"] and link["lag_ms"] == 0, link
    await a.close()
    await b.close()


async def test_a_send_homed_elsewhere_is_sent_only_once_durable_there(
        two_regions: Regions) -> None:
    """The home region's Kafka frozen: a device in the other region gets no `sent`, but an
    `unavailable` it can retry with the same cid; after the thaw the retry lands once."""
    dep = two_regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    conv = (await a.create([bob]))["conv"]
    await b.send_text(conv, "before", timeout=CROSS)
    kafka = program_pid(dep, f"kafka.{EAST}")
    os.kill(kafka, signal.SIGSTOP)
    try:
        reply = await b.request({"t": "send", "conv": conv, "cid": "during", "kind": "text",
                                 "body": "while the home is away"}, timeout=30)
        assert reply["t"] == "error" and reply["code"] == "unavailable", reply
    finally:
        os.kill(kafka, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while True:  # the client's retry loop: same cid until it is acknowledged
        reply = await b.request({"t": "send", "conv": conv, "cid": "during", "kind": "text",
                                 "body": "while the home is away"}, timeout=30)
        if reply["t"] == "sent" or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert reply["t"] == "sent", reply
    got = await a.wait_msgs(conv, 2, timeout=60)
    await a.quiet(2.0)
    cids = [m["cid"] for m in a.msgs(conv)]
    # a send that was produced before the freeze timed out at the client may land too,
    # but never twice and always under the seq its `sent` named
    assert cids.count("during") == 1 and cids[0] == "before", cids
    assert next(m for m in got if m["cid"] == "during")["seq"] == reply["seq"]
    assert_chain(a.msgs(conv))
    await a.close()
    await b.close()

