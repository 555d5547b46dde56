"""Protocol v1 end to end: real WebSocket clients against a deployment from `msgctl up`."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Deployment
from tests.wsclient import Client, assert_chain

pytestmark = pytest.mark.e2e


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def open_client(dep: Deployment, user: str, device: str = "phone") -> Client:
    return await Client.open(dep.next_ws_url(), dep.token(user, device))


async def test_hello_and_auth(deployment: Deployment) -> None:
    alice = uid("alice")
    c = await open_client(deployment, alice, "phone")
    assert c.hello["user"] == alice and c.hello["device"] == "phone"
    assert c.hello["region"] == "local" and c.hello["session"]
    assert c.hello["heartbeat_ms"] > 0
    assert c.ws.subprotocol == "msgctl.v1"
    await c.close()
    q = await Client.open(deployment.ws_url, deployment.token(alice, "web"), query_token=True)
    assert q.hello["device"] == "web"
    await q.close()
    for headers in ({"Authorization": "Bearer not-a-jwt"}, {}):
        with pytest.raises(InvalidStatus) as exc:
            await connect(deployment.ws_url, additional_headers=headers)
        assert exc.value.response.status_code == 401
    expired = deployment.token(alice, "phone", ttl=-10)
    with pytest.raises(InvalidStatus) as exc:
        await connect(f"{deployment.ws_url}?token={expired}")
    assert exc.value.response.status_code == 401


async def test_one_to_one_and_multi_device(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a_phone = await open_client(deployment, alice, "phone")
    a_laptop = await open_client(deployment, alice, "laptop")
    b_phone = await open_client(deployment, bob, "phone")
    created = await a_phone.create([bob], title="lunch")
    conv = created["conv"]
    assert sorted(created["members"]) == sorted([alice, bob])
    assert created["home"] == "local"
    sent = await a_phone.send_text(conv, "c1", "hello bob")
    assert (sent["seq"], sent["prev"], sent["cid"], sent["conv"]) == (1, 0, "c1", conv)
    assert isinstance(sent["ts"], int)
    for device in (b_phone, a_laptop):
        m = (await device.wait_msgs(conv, 1))[0]
        assert m["seq"] == 1 and m["prev"] == 0 and m["body"] == "hello bob"
        assert m["from"] == alice and m["from_device"] == "phone" and m["cid"] == "c1"
        assert m["kind"] == "text" and m["mid"] and m["ts"] == sent["ts"]
    await a_phone.quiet()
    assert a_phone.msgs(conv) == []  # the sender's own device gets `sent`, not `msg`
    reply = await b_phone.send_text(conv, "b1", "hi alice")
    assert reply["seq"] == 2 and reply["prev"] == 1
    got = await a_phone.wait_msgs(conv, 1)
    assert got[0]["seq"] == 2 and got[0]["prev"] == 1
    for c in (a_phone, a_laptop, b_phone):
        await c.close()


async def test_ordering_under_concurrent_senders_in_a_group(deployment: Deployment) -> None:
    users = [uid("u") for _ in range(4)]
    clients = [await open_client(deployment, u) for u in users]
    watcher = await open_client(deployment, users[0], "tablet")
    conv = (await clients[0].create(users[1:]))["conv"]
    per_sender = 40

    async def burst(i: int, c: Client) -> list[dict]:
        for n in range(per_sender):
            await c.send({"t": "send", "conv": conv, "cid": f"{i}-{n}", "kind": "text",
                          "body": f"{i}:{n}", "id": f"{i}-{n}"})
        return [await c.wait_t("sent", id=f"{i}-{n}", timeout=20) for n in range(per_sender)]

    sents = await asyncio.gather(*(burst(i, c) for i, c in enumerate(clients)))
    total = per_sender * len(clients)
    seqs = sorted(s["seq"] for group in sents for s in group)
    assert seqs == list(range(1, total + 1))  # every send got its own seq, no gaps
    for group in sents:  # one connection's sends keep their order
        assert [s["seq"] for s in group] == sorted(s["seq"] for s in group)
    all_msgs = await watcher.wait_msgs(conv, total, timeout=30)
    assert_chain(all_msgs)
    assert len(all_msgs) == total
    for i, c in enumerate(clients):
        own = {s["seq"] for s in sents[i]}
        got = await c.wait_msgs(conv, total - per_sender, timeout=30)
        await c.quiet(0.2)
        got = c.msgs(conv)
        assert len(got) == total - per_sender
        assert [m["seq"] for m in got] == sorted(set(range(1, total + 1)) - own)
        assert not any(m["seq"] in own for m in got)
        # the chain, including the device's own sends, has no hole
        assert sorted([m["seq"] for m in got] + list(own)) == list(range(1, total + 1))
    for c in [*clients, watcher]:
        await c.close()


async def test_idempotent_resend(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    b = await open_client(deployment, bob)
    conv = (await a.create([bob]))["conv"]
    first = await a.send_text(conv, "same", "once")
    await a.send_text(conv, "other", "two")
    again = await a.send_text(conv, "same", "once")
    assert (again["seq"], again["prev"], again["ts"]) == (first["seq"], first["prev"],
                                                          first["ts"])
    await b.wait_msgs(conv, 2)
    await b.quiet()
    assert [m["cid"] for m in b.msgs(conv)] == ["same", "other"]
    batch = await a.request({"t": "sync", "conv": conv, "after": 0})
    assert [m["cid"] for m in batch["msgs"]] == ["same", "other"]
    await a.close()
    await b.close()


async def test_receipts_and_read_sync(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    b1 = await open_client(deployment, bob, "phone")
    b2 = await open_client(deployment, bob, "laptop")
    conv = (await a.create([bob]))["conv"]
    for i in range(3):
        await a.send_text(conv, f"m{i}")
    await b1.wait_msgs(conv, 3)
    await b1.send({"t": "ack", "conv": conv, "seq": 2})
    r = await a.wait_t("receipt", conv=conv, kind="delivered")
    assert (r["user"], r["seq"]) == (bob, 2)
    await b1.send({"t": "ack", "conv": conv, "seq": 1})  # lower: cumulative, nothing moves
    await b1.send({"t": "read", "conv": conv, "seq": 3})
    d = await a.wait_t("receipt", conv=conv, kind="delivered")
    assert d["seq"] == 3  # reading implies delivered: read <= delivered
    rd = await a.wait_t("receipt", conv=conv, kind="read")
    assert (rd["user"], rd["seq"]) == (bob, 3)
    rs = await b2.wait_t("read_sync", conv=conv)
    assert rs["seq"] == 3
    await b1.send({"t": "read", "conv": conv, "seq": 99})  # above head: clamped, no move
    await a.quiet()
    receipts = [f for f in a.frames if f.get("t") == "receipt"]
    assert [(f["kind"], f["seq"]) for f in receipts] == [("delivered", 2), ("delivered", 3),
                                                         ("read", 3)]
    assert not [f for f in b1.frames if f.get("t") in ("read_sync", "receipt")]
    for c in (a, b1, b2):
        await c.close()


async def test_reconnect_resumes_after_last_ack(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    b = await open_client(deployment, bob)
    conv = (await a.create([bob]))["conv"]
    for i in range(5):
        await a.send_text(conv, f"m{i}")
    await b.wait_msgs(conv, 5)
    await b.send({"t": "ack", "conv": conv, "seq": 3})
    await a.wait_t("receipt", conv=conv, kind="delivered")
    await b.close()
    for i in range(5, 7):
        await a.send_text(conv, f"m{i}")
    b = await open_client(deployment, bob)
    got = await b.wait_msgs(conv, 4)
    await b.quiet()
    got = b.msgs(conv)
    assert [m["seq"] for m in got] == [4, 5, 6, 7]  # unacked again, then the new ones
    assert_chain(got, start_prev=3)
    await a.send_text(conv, "live")
    live = await b.wait_msgs(conv, 5)
    assert live[-1]["seq"] == 8 and live[-1]["prev"] == 7
    await a.close()
    await b.close()


async def test_new_device_gets_what_is_sent_after_it_first_connected(
        deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    conv = (await a.create([bob]))["conv"]
    for i in range(3):
        await a.send_text(conv, f"old{i}")
    tablet = await open_client(deployment, bob, "tablet")
    await tablet.quiet()
    assert tablet.msgs(conv) == []
    await tablet.close()
    await a.send_text(conv, "while-away")
    tablet = await open_client(deployment, bob, "tablet")  # never acked: from first connect
    got = await tablet.wait_msgs(conv, 1)
    await tablet.quiet()
    assert [m["cid"] for m in tablet.msgs(conv)] == ["while-away"]
    assert got[0]["prev"] == 3
    history = await tablet.request({"t": "sync", "conv": conv, "after": 0})
    assert [m["seq"] for m in history["msgs"]] == [1, 2, 3, 4]
    await a.close()
    await tablet.close()


async def test_sync_pages_and_sync_all(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    c1 = (await a.create([bob]))["conv"]
    c2 = (await a.create([bob, uid("carol")]))["conv"]
    b = await open_client(deployment, bob)  # registers bob's device at the current heads
    for i in range(5):
        await a.send_text(c1, f"x{i}")
    await a.send_text(c2, "y0")
    page = await b.request({"t": "sync", "conv": c1, "after": 1, "limit": 2})
    assert page["t"] == "batch" and page["conv"] == c1 and page["more"] is True
    assert [m["seq"] for m in page["msgs"]] == [2, 3]
    last = await b.request({"t": "sync", "conv": c1, "after": 3, "limit": 2})
    assert [m["seq"] for m in last["msgs"]] == [4, 5] and last["more"] is False
    await b.wait_msgs(c1, 5)
    await b.send({"t": "ack", "conv": c1, "seq": 5})
    await a.wait_t("receipt", conv=c1, kind="delivered", seq=5)
    fid = "all-1"
    await b.send({"t": "sync", "id": fid})
    synced = await b.wait_t("synced", id=fid)
    assert synced["t"] == "synced"
    batches = [f for f in b.frames if f.get("t") == "batch" and f.get("id") == fid]
    assert [(x["conv"], [m["seq"] for m in x["msgs"]]) for x in batches] == [(c2, [1])]
    await a.close()
    await b.close()


async def test_presence_is_lazy_and_has_grace(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    reply = await a.request({"t": "watch", "users": [bob]})
    assert reply["t"] == "presence" and reply["user"] == bob and reply["state"] == "offline"
    b = await open_client(deployment, bob)
    on = await a.wait_t("presence", user=bob, state="online")
    assert on["last_active"] > 0
    await b.close()
    b = await open_client(deployment, bob)  # back within the grace: no flap
    await b.close()
    off = await a.wait_t("presence", user=bob, state="offline", timeout=5)
    assert off["last_active"] >= on["last_active"]
    states = [f["state"] for f in a.frames if f.get("t") == "presence" and f["user"] == bob]
    assert states == ["offline", "online", "offline"]
    # lazy: after the watch set is replaced, bob's changes are not sent
    await a.send({"t": "watch", "users": []})  # an empty set has no presence to reply with
    b = await open_client(deployment, bob)
    await a.quiet(0.3)
    states = [f["state"] for f in a.frames if f.get("t") == "presence" and f["user"] == bob]
    assert states == ["offline", "online", "offline"]
    await a.close()
    await b.close()


async def test_typing_and_push_register(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    b = await open_client(deployment, bob)
    conv = (await a.create([bob]))["conv"]
    await a.send({"t": "typing", "conv": conv})
    t = await b.wait_t("typing", conv=conv)
    assert t["user"] == alice
    await a.quiet()
    assert not [f for f in a.frames if f.get("t") == "typing"]
    ok = await b.request({"t": "push_register", "platform": "fcm", "token": "tok-123"})
    assert ok["t"] == "ok"
    bad = await b.request({"t": "push_register", "platform": "sms", "token": "x"})
    assert bad["t"] == "error" and bad["code"] == "bad_frame"
    await a.close()
    await b.close()


async def test_push_goes_to_offline_devices_only(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    b = await open_client(deployment, bob, "phone")
    conv = (await a.create([bob]))["conv"]
    await b.request({"t": "push_register", "platform": "apns", "token": f"apns-{bob}"})
    await a.send_text(conv, "while-online")
    await b.wait_msgs(conv, 1)
    if deployment.family == "cluster":
        # online is judged when the push process handles the event, a few ms after the
        # router delivered it; a device leaving inside that window would be notified
        await asyncio.sleep(1.0)
    await b.close()
    await a.send_text(conv, "while-offline")
    sink = deployment.home / "data" / "push-local.jsonl"
    for _ in range(50):
        records = [json.loads(x) for x in sink.read_text().splitlines()] if sink.exists() else []
        mine = [r for r in records if r["user"] == bob]
        if mine:
            break
        await asyncio.sleep(0.1)
    assert [r["payload"]["seq"] for r in mine] == [2]
    assert mine[0]["platform"] == "apns" and mine[0]["payload"]["collapse_key"] == conv
    await a.close()


async def test_errors_keep_the_connection_open(deployment: Deployment) -> None:
    alice, bob, eve = uid("alice"), uid("bob"), uid("eve")
    a = await open_client(deployment, alice)
    e = await open_client(deployment, eve)
    conv = (await a.create([bob]))["conv"]
    cases = [
        ("not json", "bad_frame"),
        ("[1,2]", "bad_frame"),
        (b"\x00binary", "bad_frame"),
        (json.dumps({"t": "nope", "id": "x1"}), "bad_frame"),
        (json.dumps({"t": "send", "conv": conv, "id": "x2"}), "bad_frame"),
        (json.dumps({"t": "ack", "conv": conv, "seq": "1"}), "bad_frame"),
        (json.dumps({"t": "send", "conv": conv, "cid": "c", "kind": "text",
                     "body": "x" * 20000, "id": "x3"}), "too_large"),
        ("x" * 70000, "too_large"),
    ]
    for raw, code in cases:
        await a.ws.send(raw)
        err = await a.wait_t("error")
        assert err["code"] == code, (raw[:40], err)
        assert err["message"]
    assert (await a.request({"t": "ping"}))["t"] == "pong"
    # a name of this run's own: the gateway fuzz test, on the same deployment, may have
    # created "no-such-conv" (its pool of conversation names holds it), making this forbidden
    nf = await a.request({"t": "send", "conv": uid("no-such-conv"), "cid": "c", "kind": "text",
                          "body": "x"})
    assert nf["code"] == "not_found"
    for frame in ({"t": "send", "conv": conv, "cid": "c", "kind": "text", "body": "x"},
                  {"t": "sync", "conv": conv, "after": 0}, {"t": "typing", "conv": conv},
                  {"t": "ack", "conv": conv, "seq": 1}):
        err = await e.request(frame)
        assert err["t"] == "error" and err["code"] == "forbidden", err
    exists = await e.request({"t": "create", "members": [bob], "conv": conv})
    assert exists["code"] == "forbidden"
    assert (await e.request({"t": "ping"}))["t"] == "pong"
    await a.close()
    await e.close()


async def test_hard_frame_limit_closes_with_1009(deployment: Deployment) -> None:
    a = await open_client(deployment, uid("alice"))
    await a.ws.send("x" * 300_000)
    closed = await a.wait_closed()
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1009


async def test_rate_limit_then_cut_off(deployment: Deployment) -> None:
    a = await open_client(deployment, uid("flood"))
    bystander = await open_client(deployment, uid("calm"))
    ping = json.dumps({"t": "ping"})
    # flood until cut off: on a loaded machine the bucket refills while a fixed number of
    # pings trickles in, so a fixed count may never exceed the limit by enough strikes
    for i in range(50_000):
        try:
            await a.ws.send(ping)
        except ConnectionClosed:
            break
        if a.closed:
            break
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the reader see a close
    err = await a.wait(lambda f: f.get("code") == "rate_limited", timeout=10)
    assert err["retry_ms"] > 0
    closed = await a.wait_closed(30)
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1008
    # someone else's abuse affects no one else
    assert (await bystander.request({"t": "ping"}))["t"] == "pong"
    await bystander.close()


async def test_slow_consumer_is_closed_and_resumes(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    conv = (await a.create([bob]))["conv"]
    # bob's client stops reading: its library buffers 4 frames, then TCP fills up. Its
    # socket takes 64 KiB, as a phone's on a slow link would: loopback's own autotuning
    # would let the kernel hold tens of megabytes for it, which the gateway (it writes a
    # frame at once while its transport takes more) never sees as queued
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before the window is agreed
    raw.connect(("127.0.0.1", deployment.port))
    raw.setblocking(False)
    slow = await connect(deployment.ws_url, max_queue=4, sock=raw,
                         additional_headers={"Authorization": f"Bearer {deployment.token(bob)}"})
    # a new device starts at the heads of its first hello: what is sent before it is
    # not its history (sending before it came was a race that lost the first messages)
    assert json.loads(await asyncio.wait_for(slow.recv(), 10))["t"] == "hello"
    # the gateway reads frames once the session's resume after hello is done: with the
    # pong, the sends below reach it live (a resume still running when they were routed
    # filled them from the store, paced, and the test never saw a slow consumer)
    await slow.send(json.dumps({"t": "ping", "id": "p"}))
    assert json.loads(await asyncio.wait_for(slow.recv(), 10))["t"] == "pong"
    body = "y" * 15000
    count = 400
    for i in range(count):
        await a.send({"t": "send", "conv": conv, "cid": f"s{i}", "kind": "text", "body": body,
                      "id": f"s{i}"})
    # 6 MB through Kafka transactions and Cassandra on a 2-core machine takes a while
    patience = 30 if deployment.family == "embedded" else 180
    for i in range(count):
        await a.wait_t("sent", id=f"s{i}", timeout=patience)
    frames = 0
    try:
        while True:
            await asyncio.wait_for(slow.recv(), 10)
            frames += 1
    except Exception:
        pass
    assert slow.close_code == 1013, (slow.close_code, frames)
    assert frames < count
    b = await open_client(deployment, bob)  # resumes: everything, in order
    got = await b.wait_msgs(conv, count, timeout=patience)
    assert [m["seq"] for m in got] == list(range(1, count + 1))
    await a.close()
    await b.close()


async def test_rest_history_health_and_metrics(deployment: Deployment) -> None:
    alice, bob, eve = uid("alice"), uid("bob"), uid("eve")
    a = await open_client(deployment, alice)
    conv = (await a.create([bob]))["conv"]
    for i in range(3):
        await a.send_text(conv, f"r{i}", f"body {i}")
    status, body = deployment.get(f"/v1/conversations/{conv}/messages?after=1&limit=1",
                                  deployment.token(bob))
    assert status == 200 and body["more"] is True
    assert [(m["seq"], m["body"]) for m in body["msgs"]] == [(2, "body 1")]
    status, body = deployment.get(f"/v1/conversations/{conv}/messages",
                                  deployment.token(alice))
    assert status == 200 and [m["seq"] for m in body["msgs"]] == [1, 2, 3]
    assert body["more"] is False
    assert deployment.get(f"/v1/conversations/{conv}/messages")[0] == 401
    assert deployment.get(f"/v1/conversations/{conv}/messages", "bad")[0] == 401
    assert deployment.get(f"/v1/conversations/{conv}/messages",
                          deployment.token(eve))[0] == 403
    assert deployment.get("/v1/conversations/nope/messages", deployment.token(eve))[0] == 404
    assert deployment.get(f"/v1/conversations/{conv}/messages?limit=0",
                          deployment.token(alice))[0] == 400
    status, health = deployment.get("/healthz")
    assert status == 200 and health["status"] == "ok"
    status, ready = deployment.get("/readyz")
    assert status == 200 and ready["ready"] is True
    # embedded: one process hosts all four; cluster: each runtime has its own /readyz
    expected = ({"gateway", "sequencer", "presence", "push"} if deployment.family == "embedded"
                else {"gateway"})
    assert set(ready["runtimes"]) == expected
    status, metrics = deployment.get("/metrics")
    assert status == 200 and "msgctl_messages_total" in metrics
    assert "msgctl_send_seconds_bucket" in metrics
    assert deployment.get("/nope")[0] == 404
    await a.close()


async def test_cid_is_scoped_to_its_sender(deployment: Deployment) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    b = await open_client(deployment, bob)
    conv = (await a.create([bob]))["conv"]
    mine = await a.send_text(conv, "1", "from alice")
    theirs = await b.send_text(conv, "1", "from bob")  # same cid, other sender: a new message
    assert (mine["seq"], theirs["seq"]) == (1, 2)
    history = await a.request({"t": "sync", "conv": conv, "after": 0})
    assert [(m["from"], m["body"]) for m in history["msgs"]] == [(alice, "from alice"),
                                                                (bob, "from bob")]
    assert (await b.send_text(conv, "1", "from bob"))["seq"] == 2  # and bob's retry dedupes
    await a.close()
    await b.close()


async def test_expired_token_ends_the_session(deployment: Deployment) -> None:
    c = await Client.open(deployment.ws_url, deployment.token(uid("brief"), ttl=2))
    err = await c.wait_t("error", timeout=6)
    assert err["code"] == "unauthorized" and "expired" in err["message"]
    closed = await c.wait_closed()
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1008


async def test_pages_of_large_non_ascii_bodies_are_cut_by_bytes(deployment: Deployment) -> None:
    """100 messages of 16 KiB emoji bodies are ~4.9 MB of JSON (each emoji is a 12-byte
    escape): more than the 4 MiB send queue in one `batch`. Every page stops near 1 MiB
    with `more`, the connection stays open, and reading on gets every message once."""
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(deployment, alice)
    conv = (await a.create([bob]))["conv"]
    b = await open_client(deployment, bob)  # a known device from now on
    await b.close()
    body = "\U0001F600" * 4096  # 16 KiB of UTF-8, the largest body allowed
    for i in range(100):
        await a.send_text(conv, f"big{i}", body)
    b = await open_client(deployment, bob)
    # the resume fill of the 100 unacked: every message once, in order, connection open
    got = await b.wait_msgs(conv, 100, timeout=60)
    assert [m["seq"] for m in got] == list(range(1, 101))
    seqs: list[int] = []
    pages = 0
    after = 0
    while True:
        page = await b.sync(conv, after=after, limit=100, timeout=20)
        assert page["t"] == "batch", page
        assert page["msgs"], page
        seqs += [m["seq"] for m in page["msgs"]]
        pages += 1
        if not page["more"]:
            break
        after = seqs[-1]
    assert seqs == list(range(1, 101))
    assert pages >= 5  # 1 MiB each, or a quarter of a smaller send queue
    # sync of everything: the first page of the conversation, not a close
    await b.send({"t": "sync", "id": "everything"})
    await b.wait_t("synced", timeout=20, id="everything")
    batches = [f for f in b.frames if f.get("t") == "batch" and f.get("id") == "everything"]
    assert len(batches) == 1 and batches[0]["more"] is True
    assert batches[0]["msgs"][0]["seq"] == 1
    # REST pages the same way
    status, rest = deployment.get(f"/v1/conversations/{conv}/messages?limit=100",
                                  deployment.token(bob), timeout=20)
    assert status == 200 and rest["more"] is True and 0 < len(rest["msgs"]) < 100
    assert b.closed is None
    # a seq past 64 bits is bad input, not a server error
    status, err = deployment.get(f"/v1/conversations/{conv}/messages?after={2**64}",
                                 deployment.token(bob))
    assert status == 400 and err["error"] == "bad_request", (status, err)
    await a.close()
    await b.close()
