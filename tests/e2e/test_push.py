"""Push end to end on the embedded default, with FCM and APNs stand-ins in the topology."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import Deployment, free_port, msgctl, write_topology
from tests.e2e.test_protocol import open_client, uid
from tests.standins import INVALID, UNAVAILABLE, Outcome, Standins

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standins]:
    s = Standins.start(tmp_path_factory.mktemp("standins"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def push_deployment(tmp_path_factory: pytest.TempPathFactory,
                    standins: Standins) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("push")
    port = free_port()
    topo = write_topology(root / "topology.yaml", port)
    raw = yaml.safe_load(topo.read_text())
    raw["push"] = standins.push_section(max_attempts=MAX_ATTEMPTS, backoff_ms=50)
    topo.write_text(yaml.safe_dump(raw))
    dep = Deployment(root / "home", topo, port)
    dep.up()
    yield dep
    msgctl("down", "--home", str(dep.home), check=False)


async def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_once_per_offline_device_never_online(push_deployment: Deployment,
                                                    standins: Standins) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    a = await open_client(push_deployment, alice)
    bp = await open_client(push_deployment, bob, "phone")
    bt = await open_client(push_deployment, bob, "tablet")
    c = await open_client(push_deployment, carol, "phone")
    conv = (await a.create([bob, carol]))["conv"]
    fcm_b, apns_b, fcm_c = f"fcm-{bob}", f"ab{bob[-8:]}", f"fcm-{carol}"
    await bp.request({"t": "push_register", "platform": "fcm", "token": fcm_b})
    await bt.request({"t": "push_register", "platform": "apns", "token": apns_b})
    await c.request({"t": "push_register", "platform": "fcm", "token": fcm_c})
    await a.send_text(conv, "c1", "while-online")
    await bp.wait_msgs(conv, 1)
    await bp.close()
    await bt.close()
    await a.send_text(conv, "c2", "offline-1")
    await a.send_text(conv, "c3", "offline-2")
    await wait_for(lambda: len(standins.fcm.script.for_token(fcm_b)) >= 2
                   and len(standins.apns.script.for_token(apns_b)) >= 2)
    await asyncio.sleep(0.5)  # nothing more arrives
    fcm_got = standins.fcm.script.for_token(fcm_b)
    apns_got = standins.apns.script.for_token(apns_b)
    assert sorted(int(r.body["message"]["data"]["seq"]) for r in fcm_got) == [2, 3]
    assert sorted(r.body["seq"] for r in apns_got) == [2, 3]
    assert all(r.status == 200 for r in fcm_got + apns_got)
    assert {r.body["message"]["android"]["collapse_key"] for r in fcm_got} == {conv}
    assert {r.headers["apns-collapse-id"] for r in apns_got} == {conv}
    # badge = unread count: bob read nothing, so 2 then 3
    assert sorted(r.body["aps"]["badge"] for r in apns_got) == [2, 3]
    assert fcm_got[0].body["message"]["notification"]["body"].startswith("offline-")
    assert standins.fcm.script.for_token(fcm_c) == []  # carol is online
    assert standins.fcm.script.violations == [] and standins.apns.script.violations == []
    await a.close()
    await c.close()


async def _offline_target(dep: Deployment, platform: str,
                          token: str) -> tuple[object, str, str]:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(dep, alice)
    b = await open_client(dep, bob, "phone")
    conv = (await a.create([bob]))["conv"]
    await b.request({"t": "push_register", "platform": platform, "token": token})
    await b.close()
    return a, conv, bob


@pytest.mark.parametrize("platform", ["fcm", "apns"])
async def test_invalid_token_is_removed(push_deployment: Deployment, standins: Standins,
                                        platform: str) -> None:
    stand = standins.fcm if platform == "fcm" else standins.apns
    token = f"dead{uid('t')[-8:]}"
    stand.script.then(token, INVALID)  # FCM 404 UNREGISTERED, APNs 410 Unregistered
    a, conv, bob = await _offline_target(push_deployment, platform, token)
    await a.send_text(conv, "c1", "one")  # type: ignore[attr-defined]
    await wait_for(lambda: len(stand.script.for_token(token)) == 1)
    assert stand.script.for_token(token)[0].status == (404 if platform == "fcm" else 410)
    await asyncio.sleep(0.3)
    await a.send_text(conv, "c2", "two")  # type: ignore[attr-defined]
    await asyncio.sleep(0.8)
    assert len(stand.script.for_token(token)) == 1  # the token was dropped: no second try
    proc = msgctl("push", "test", bob, "--home", str(push_deployment.home), check=False)
    assert proc.returncode == 1 and "no registered push token" in proc.stderr
    await a.close()  # type: ignore[attr-defined]


async def test_retry_on_503_with_retry_after(push_deployment: Deployment,
                                             standins: Standins) -> None:
    token = f"fcm-{uid('retry')}"
    standins.fcm.script.then(token, Outcome(UNAVAILABLE, retry_after=1))
    a, conv, _ = await _offline_target(push_deployment, "fcm", token)
    await a.send_text(conv, "c1", "retry me")  # type: ignore[attr-defined]
    await wait_for(lambda: len(standins.fcm.script.for_token(token)) >= 2)
    await asyncio.sleep(0.5)
    first, second = standins.fcm.script.for_token(token)
    assert (first.status, second.status) == (503, 200)
    assert second.at - first.at >= 0.95  # Retry-After: 1 honoured (backoff alone is 50 ms)
    await a.close()  # type: ignore[attr-defined]


async def test_dead_letter_after_the_last_attempt(push_deployment: Deployment,
                                                  standins: Standins) -> None:
    token = f"ab{uid('x')[-8:]}"
    standins.apns.script.then(token, *[UNAVAILABLE] * MAX_ATTEMPTS)
    a, conv, bob = await _offline_target(push_deployment, "apns", token)
    await a.send_text(conv, "c1", "never")  # type: ignore[attr-defined]
    dl = push_deployment.home / "data" / "push-deadletter-local.jsonl"

    def records() -> list[dict]:
        lines = dl.read_text().splitlines() if dl.exists() else []
        return [r for r in map(json.loads, lines) if r["user"] == bob]

    await wait_for(records)
    (rec,) = records()
    assert rec["device"] == "phone" and rec["platform"] == "apns" and rec["conv"] == conv
    assert rec["seq"] == 1 and rec["attempts"] == MAX_ATTEMPTS
    assert rec["reason"] == "503 ServiceUnavailable"
    assert len(standins.apns.script.for_token(token)) == MAX_ATTEMPTS
    await a.close()  # type: ignore[attr-defined]


async def test_msgctl_push_test_prints_the_answers(push_deployment: Deployment,
                                                   standins: Standins) -> None:
    bob = uid("bob")
    p = await open_client(push_deployment, bob, "phone")
    t = await open_client(push_deployment, bob, "tablet")
    await p.request({"t": "push_register", "platform": "fcm", "token": f"fcm-{bob}"})
    await t.request({"t": "push_register", "platform": "apns", "token": f"ab{bob[-8:]}"})
    home = str(push_deployment.home)
    out = json.loads(msgctl("push", "test", bob, "--json", "--home", home).stdout)
    by_device = {r["device"]: r for r in out["results"]}
    assert by_device["phone"]["provider"] == "fcm" and by_device["phone"]["status"] == 200
    assert by_device["phone"]["answer"]["name"].startswith("projects/msgctl-test/messages/")
    assert by_device["tablet"]["provider"] == "apns" and by_device["tablet"]["answer"]["apns_id"]
    table = msgctl("push", "test", bob, "--device", "tablet", "--home", home).stdout
    assert "tablet" in table and "apns" in table and "200" in table and "phone" not in table
    standins.apns.script.then(f"ab{bob[-8:]}", INVALID)
    bad = msgctl("push", "test", bob, "-d", "tablet", "--home", home, check=False)
    assert bad.returncode == 1 and "Unregistered" in bad.stdout
    status = push_deployment.status()
    assert status["push_queue"] == {"local": 0}
    assert "push queue: local 0" in msgctl("status", "--home", home).stdout
    await p.close()
    await t.close()


async def test_push_unregister_stops_the_devices_notifications(push_deployment: Deployment,
                                                                standins: Standins) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(push_deployment, alice)
    p = await open_client(push_deployment, bob, "phone")
    t = await open_client(push_deployment, bob, "tablet")
    conv = (await a.create([bob]))["conv"]
    phone_tok, tablet_tok = f"fcm-phone-{bob}", f"fcm-tablet-{bob}"
    await p.request({"t": "push_register", "platform": "fcm", "token": phone_tok})
    await t.request({"t": "push_register", "platform": "fcm", "token": tablet_tok})
    # bob logs out on the phone; again is fine too (idempotent)
    for _ in range(2):
        ok = await p.request({"t": "push_unregister"})
        assert ok["t"] == "ok" and set(ok) == {"t", "id"}
    await p.close()
    await t.close()
    await a.send_text(conv, "c1", "after the logout")
    await wait_for(lambda: standins.fcm.script.for_token(tablet_tok))
    await asyncio.sleep(0.5)  # the phone's would have come with the tablet's
    assert standins.fcm.script.for_token(phone_tok) == []
    out = json.loads(msgctl("push", "test", bob, "--json", "--home",
                            str(push_deployment.home)).stdout)
    assert [r["device"] for r in out["results"]] == ["tablet"]
    await a.close()


async def test_a_token_moves_to_the_account_that_registered_it_last(
        push_deployment: Deployment, standins: Standins) -> None:
    """Bob's phone, then carol logs in on it: bob's messages must not light it up."""
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    token = f"fcm-shared-{bob}"
    a = await open_client(push_deployment, alice)
    to_bob = (await a.create([bob]))["conv"]
    to_carol = (await a.create([carol]))["conv"]
    b = await open_client(push_deployment, bob, "phone")
    assert (await b.request({"t": "push_register", "platform": "fcm", "token": token}))["t"] \
        == "ok"
    await b.close()  # logged out without push_unregister (the app was wiped, say)
    c = await open_client(push_deployment, carol, "phone")
    assert (await c.request({"t": "push_register", "platform": "fcm", "token": token}))["t"] \
        == "ok"
    await c.close()
    await a.send_text(to_bob, "b1", "for bob")
    await a.send_text(to_carol, "c1", "for carol")
    await wait_for(lambda: standins.fcm.script.for_token(token))
    await asyncio.sleep(0.5)  # bob's would have come by now
    got = standins.fcm.script.for_token(token)
    assert [r.body["message"]["data"]["conv"] for r in got] == [to_carol]
    assert got[0].body["message"]["notification"]["body"] == "for carol"
    home = str(push_deployment.home)
    no_token = msgctl("push", "test", bob, "--home", home, check=False)
    assert no_token.returncode == 1 and "no registered push token" in no_token.stderr
    await a.close()


@pytest.fixture(scope="module")
def cluster_push_deployment(tmp_path_factory: pytest.TempPathFactory,
                            standins: Standins) -> Iterator[Deployment]:
    from tests.conftest import TEST_LIMITS, start_cluster_deployment

    dep = start_cluster_deployment(
        tmp_path_factory.mktemp("push-cluster"), limits=dict(TEST_LIMITS),
        push=standins.push_section(max_attempts=MAX_ATTEMPTS, backoff_ms=50))
    yield dep
    msgctl("down", "--home", str(dep.home), check=False, timeout=300)


def invalid_tokens_dropped(dep: Deployment) -> float:
    """The cluster push runtime's count of tokens removed after an invalid-token answer."""
    url = f"http://127.0.0.1:{dep.port + 12}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('msgctl_push_total{outcome="dropped_invalid_token"}'):
                return float(line.split()[-1])
    return 0.0


async def test_cluster_push_runtime_uses_the_providers(cluster_push_deployment: Deployment,
                                                       standins: Standins) -> None:
    """The cluster family's push process (push.<region>) on Kafka, Cassandra and Redis."""
    dep = cluster_push_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(dep, alice)
    b = await open_client(dep, bob, "phone")
    t = await open_client(dep, bob, "tablet")
    conv = (await a.create([bob]))["conv"]
    fcm_b, apns_b = f"fcm-{bob}", f"ab{bob[-8:]}"
    await b.request({"t": "push_register", "platform": "fcm", "token": fcm_b})
    await t.request({"t": "push_register", "platform": "apns", "token": apns_b})
    standins.apns.script.then(apns_b, INVALID)
    await b.close()
    await t.close()
    await asyncio.sleep(0.5)  # the session directory (Redis) forgets them
    await a.send_text(conv, "c1", "one")
    await wait_for(lambda: standins.fcm.script.for_token(fcm_b)
                   and standins.apns.script.for_token(apns_b), timeout=30)
    # the next message goes out once the 410 was handled: a notification already on its
    # way when the 410 came back may still reach the old token (APNs would answer 410
    # again), which is not what this test is about
    await wait_for(lambda: invalid_tokens_dropped(dep) >= 1, timeout=30)
    await a.send_text(conv, "c2", "two")
    await wait_for(lambda: len(standins.fcm.script.for_token(fcm_b)) >= 2, timeout=30)
    await asyncio.sleep(1.0)
    assert [int(r.body["message"]["data"]["seq"]) for r in
            standins.fcm.script.for_token(fcm_b)] == [1, 2]
    assert [r.status for r in standins.apns.script.for_token(apns_b)] == [410]  # then removed
    out = json.loads(msgctl("push", "test", bob, "--json", "--home", str(dep.home)).stdout)
    assert [(r["device"], r["status"]) for r in out["results"]] == [("phone", 200)]
    assert dep.status()["push_queue"] == {"local": 0}
    await a.close()


async def test_cluster_push_survives_a_crash_of_the_push_runtime(
        cluster_push_deployment: Deployment, standins: Standins) -> None:
    """A notification still retrying when push.<region> is SIGKILLed is sent after it restarts:
    the feed commits past an event only once its notifications were handled."""
    import os
    import signal

    dep = cluster_push_deployment
    alice, bob = uid("alice"), uid("bob")
    a = await open_client(dep, alice)
    b = await open_client(dep, bob, "phone")
    conv = (await a.create([bob]))["conv"]
    token = f"fcm-crash-{bob}"
    await b.request({"t": "push_register", "platform": "fcm", "token": token})
    await b.close()
    await asyncio.sleep(0.5)
    # the first answer holds the notification in a 20 s Retry-After wait
    standins.fcm.script.then(token, Outcome(UNAVAILABLE, retry_after=20))
    await a.send_text(conv, "c1", "survive")
    await wait_for(lambda: len(standins.fcm.script.for_token(token)) == 1, timeout=30)
    pid = next(r["pid"] for r in dep.status()["runtimes"] if r["program"] == "push.local")
    os.kill(pid, signal.SIGKILL)
    # the supervisor restarts it; the event is read again and sent at once (well before
    # the dead process's 20 s retry would have been due)
    await wait_for(lambda: any(r.status == 200 for r in standins.fcm.script.for_token(token)),
                   timeout=18)
    sends = standins.fcm.script.for_token(token)
    assert [r.status for r in sends] == [503, 200]
    assert int(sends[1].body["message"]["data"]["seq"]) == 1
    await a.close()
