"""PushService: once per offline device, retries with Retry-After, token removal, dead letter."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from msgctl.deploy.metrics import sample
from runtime.adapters.push import PushError
from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS
from runtime.ports import Conversation, Message, PushToken
from runtime.push import PushService


class FakeStore:
    def __init__(self, tokens: list[PushToken]) -> None:
        self.tokens = {(t.user, t.device): t for t in tokens}
        self.convs = {"c1": Conversation("c1", ("alice", "bob", "carol"), "local")}

    async def get_conversation(self, conv: str) -> Conversation | None:
        return self.convs.get(conv)

    async def push_tokens(self, users: list[str]) -> list[PushToken]:
        return [t for (u, _), t in self.tokens.items() if u in users]

    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        if token is None or getattr(self.tokens.get((user, device)), "token", None) == token:
            self.tokens.pop((user, device), None)


class FakeDirectory:
    def __init__(self, online: set[tuple[str, str]]) -> None:
        self.online = online

    async def device_online(self, user: str, device: str) -> bool:
        return (user, device) in self.online


class FakeProvider:
    """Answers from a per-token list of exceptions (None: success); records every call."""

    def __init__(self, script: dict[str, list[Exception | None]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[tuple[float, PushToken, dict[str, Any]]] = []

    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((time.monotonic(), token, payload))
        queue = self.script.get(token.token)
        if queue:
            exc = queue.pop(0)
            if exc is not None:
                raise exc
        return {"status": 200}


def message(seq: int, sender: str = "alice", device: str = "phone") -> Message:
    return Message("c1", seq, seq - 1, f"m{seq}", f"cid{seq}", sender, device, 1000, "text",
                   f"body {seq}")


def service(tokens: list[PushToken], provider: FakeProvider, tmp_path: Path, *,
            online: set[tuple[str, str]] | None = None, **kwargs: Any) -> PushService:
    from runtime.conversations import Conversations

    store = FakeStore(tokens)

    async def marks(user: str, conv: str) -> Watermark:
        return Watermark(0, 1)

    kwargs.setdefault("backoff", 0.01)
    return PushService(Conversations(store), store, FakeDirectory(online or set()),  # type: ignore
                       provider, marks, deadletter=tmp_path / "dl.jsonl", region="local",
                       **kwargs)


def count(outcome: str) -> float:
    return METRICS.push.labels(outcome)._value.get()


async def test_once_per_offline_device_never_online_never_sender(tmp_path: Path) -> None:
    tokens = [PushToken("bob", "phone", "fcm", "b1"), PushToken("bob", "tablet", "apns", "b2"),
              PushToken("carol", "phone", "fcm", "c1"), PushToken("alice", "phone", "fcm", "a1"),
              PushToken("alice", "tablet", "fcm", "a2")]
    provider = FakeProvider()
    svc = service(tokens, provider, tmp_path, online={("bob", "tablet")})
    await svc.start()
    svc.on_event(message(2))
    svc.on_event(message(2))  # the same event again (a redelivery): nobody is told twice
    for _ in range(100):
        if len(provider.calls) >= 3 and svc.depth == 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await svc.stop()
    got = sorted(t.token for _, t, _ in provider.calls)
    assert got == ["a2", "b1", "c1"]  # not the sender's device, not bob's online tablet
    payload = provider.calls[0][2]
    assert payload["collapse_key"] == "c1" and payload["badge"] == 1 and payload["body"]


async def test_hide_body(tmp_path: Path) -> None:
    provider = FakeProvider()
    svc = service([PushToken("bob", "phone", "fcm", "b1")], provider, tmp_path, hide_body=True)
    assert await svc.notify(message(5)) == 1
    assert "body" not in provider.calls[0][2] and provider.calls[0][2]["badge"] == 4


async def test_retry_honours_retry_after_then_succeeds(tmp_path: Path) -> None:
    provider = FakeProvider({"b1": [PushError("UNAVAILABLE", status=503, retryable=True,
                                              retry_after=0.3)]})
    svc = service([PushToken("bob", "phone", "fcm", "b1")], provider, tmp_path)
    retried = count("retried")
    assert await svc.notify(message(2)) == 1
    (t1, _, _), (t2, _, _) = provider.calls
    assert t2 - t1 >= 0.3
    assert count("retried") == retried + 1
    assert not (tmp_path / "dl.jsonl").exists()


async def test_invalid_token_is_removed_not_retried(tmp_path: Path) -> None:
    provider = FakeProvider({"b1": [PushError("UNREGISTERED", status=404, invalid_token=True)]})
    svc = service([PushToken("bob", "phone", "fcm", "b1")], provider, tmp_path)
    dropped = count("dropped_invalid_token")
    assert await svc.notify(message(2)) == 0
    assert len(provider.calls) == 1
    assert await svc.state.push_tokens(["bob"]) == []
    assert count("dropped_invalid_token") == dropped + 1


async def test_dead_letter_after_the_last_attempt(tmp_path: Path) -> None:
    err = PushError("UNAVAILABLE", status=503, retryable=True)
    provider = FakeProvider({"b1": [err] * 10})
    svc = service([PushToken("bob", "phone", "fcm", "b1")], provider, tmp_path, max_attempts=3)
    failed = count("failed")
    assert await svc.notify(message(2)) == 0
    assert len(provider.calls) == 3
    (record,) = [json.loads(x) for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert record | {"ts": 0} == {"ts": 0, "region": "local", "user": "bob", "device": "phone",
                                  "platform": "fcm", "conv": "c1", "seq": 2,
                                  "reason": "503 UNAVAILABLE", "attempts": 3}
    assert count("failed") == failed + 1


async def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    provider = FakeProvider({"b1": [PushError("INVALID_ARGUMENT", status=400)]})
    svc = service([PushToken("bob", "phone", "fcm", "b1")], provider, tmp_path)
    assert await svc.notify(message(2)) == 0
    assert len(provider.calls) == 1
    assert "400 INVALID_ARGUMENT" in (tmp_path / "dl.jsonl").read_text()


def test_backoff_grows_with_jitter_and_respects_retry_after(tmp_path: Path) -> None:
    svc = service([], FakeProvider(), tmp_path, backoff=0.2, backoff_max=5.0)
    for attempt, ceiling in ((1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0)):
        d = svc._delay(attempt, None)
        assert ceiling / 2 <= d <= ceiling
    assert svc._delay(1, 3.0) == 3.0
    assert svc._delay(1, 60.0) == 5.0  # capped


# -- fairness: one group's burst does not starve anyone else's notification -----------------

class SlowProvider(FakeProvider):
    """Every send takes `delay` seconds, as a provider round trip does."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        answer = await super().send(token, payload)  # recorded as it starts
        await asyncio.sleep(self.delay)
        return answer


def group_service(provider: FakeProvider, tmp_path: Path, members: int,
                  **kwargs: Any) -> PushService:
    """`big`: alice and `members` offline users, one device each; `dm`: alice and dave."""
    users = [f"u{i}" for i in range(members)]
    tokens = [PushToken(u, "phone", "fcm", f"tok-{u}") for u in users]
    svc = service([*tokens, PushToken("dave", "phone", "fcm", "tok-dave")], provider,
                  tmp_path, **kwargs)
    store = svc.state
    store.convs["big"] = Conversation("big", ("alice", *users), "local")  # type: ignore
    store.convs["dm"] = Conversation("dm", ("alice", "dave"), "local")  # type: ignore
    return svc


def conv_message(conv: str, seq: int) -> Message:
    return Message(conv, seq, seq - 1, f"{conv}{seq}", f"cid{seq}", "alice", "phone", 1000,
                   "text", f"body {seq}")


async def until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def calls_to(provider: FakeProvider, token: str) -> list[int]:
    """Positions, in the order of all sends, of the sends to `token`."""
    return [i for i, (_, t, _) in enumerate(provider.calls) if t.token == token]


async def test_a_big_groups_burst_does_not_starve_a_direct_message(tmp_path: Path) -> None:
    provider = SlowProvider(0.002)
    svc = group_service(provider, tmp_path, members=50, concurrency=2)
    await svc.start()
    for seq in range(1, 41):  # 40 messages x 50 devices = 2000 notifications queued
        svc.on_event(conv_message("big", seq))
    dm = svc.on_event(conv_message("dm", 1))
    assert dm is not None
    await until(lambda: calls_to(provider, "tok-dave"))
    # dave's device waited for one turn of the devices queued before it (at most the
    # group's 50), not for the group's 2000 notifications (a global FIFO)
    (first,) = calls_to(provider, "tok-dave")
    assert first <= 50 + svc.concurrency
    await until(dm.done)
    await svc.stop()


async def test_a_device_queue_drops_only_its_own_notifications(tmp_path: Path) -> None:
    provider = SlowProvider(0.001)
    svc = group_service(provider, tmp_path, members=3, device_queue=2, concurrency=1)
    before = count("dropped_collapsed"), count("dropped_conversation_full")
    futures = [svc.on_event(conv_message("big", seq)) for seq in range(1, 21)]
    dm = svc.on_event(conv_message("dm", 1))
    await svc.start()
    await until(lambda: all(f is not None and f.done() for f in [*futures, dm]))
    await svc.stop()
    # the group's devices lost older notifications of their busy conversation (collapsed
    # within each device's queue, and at the conversation's own queue), dave lost nothing
    assert len(calls_to(provider, "tok-dave")) == 1
    for user in ("u0", "u1", "u2"):
        seqs = [p["seq"] for _, t, p in provider.calls if t.token == f"tok-{user}"]
        assert seqs == sorted(seqs) and seqs[-1] == 20 and len(seqs) < 20
    assert count("dropped_collapsed") > before[0]
    assert count("dropped_conversation_full") > before[1]
    assert svc.depth == 0


async def test_with_every_device_slot_taken_a_new_device_waits_its_turn_not_dropped(
        tmp_path: Path) -> None:
    provider = SlowProvider(0.002)
    svc = group_service(provider, tmp_path, members=30, max_devices=4, concurrency=1)
    full = count("dropped_queue_full")
    await svc.start()
    big = svc.on_event(conv_message("big", 1))
    await until(lambda: svc._queue.keys == 4)  # the group's fan-out holds every slot
    start = len(provider.calls)
    dm = svc.on_event(conv_message("dm", 1))
    await until(lambda: calls_to(provider, "tok-dave"))
    (first,) = calls_to(provider, "tok-dave")
    # the freed slots go to the waiting fan-outs in turn: dave's device gets the second
    # one at the latest, then waits behind the 3 others holding a slot; not behind the
    # group's remaining 25 or so (one send may start before the dm's fan-out runs)
    assert first - start <= 2 + 3 + 1 + 1
    await until(lambda: big is not None and big.done() and dm is not None and dm.done())
    assert len(provider.calls) == 31 and count("dropped_queue_full") == full
    await svc.stop()


async def test_the_feeds_future_resolves_once_every_notification_was_handled(
        tmp_path: Path) -> None:
    provider = SlowProvider(0.05)
    svc = group_service(provider, tmp_path, members=3, concurrency=1)
    await svc.start()
    done = svc.on_event(conv_message("big", 1))
    assert done is not None
    await until(lambda: len(provider.calls) == 2)
    assert not done.done() and svc.depth >= 1  # the third device's is still to be sent
    assert queue_gauge() == svc.depth  # read at the scrape, not set on every change
    await until(done.done)
    assert len(provider.calls) == 3 and svc.depth == 0 and queue_gauge() == 0
    await svc.stop()


def queue_gauge() -> float:
    value = sample(METRICS.render().decode(), "msgctl_push_queue")  # as `msgctl status` reads it
    assert value is not None, "msgctl_push_queue is not in /metrics"
    return value


async def test_a_queued_notification_is_dropped_once_its_token_is_gone(tmp_path: Path) -> None:
    """Unregistered, or moved to another account, while the notification waited."""
    provider = SlowProvider(0.05)
    svc = group_service(provider, tmp_path, members=3, concurrency=1)
    store = svc.state
    dropped = count("dropped_unregistered")
    await svc.start()
    done = svc.on_event(conv_message("big", 1))
    assert done is not None
    await until(lambda: len(provider.calls) == 1)  # the others wait behind the first
    await store.remove_push_token("u1", "phone")  # a logout
    store.tokens.pop(("u2", "phone"))  # another account registered u2's token
    store.tokens[("erin", "phone")] = PushToken("erin", "phone", "fcm", "tok-u2")
    await until(done.done)
    await svc.stop()
    assert [t.token for _, t, _ in provider.calls] == ["tok-u0"]
    assert count("dropped_unregistered") == dropped + 2


class CountingStore(FakeStore):
    def __init__(self, tokens: list[PushToken]) -> None:
        super().__init__(tokens)
        self.reads: list[list[str]] = []

    async def push_tokens(self, users: list[str]) -> list[PushToken]:
        self.reads.append(sorted(users))
        return await super().push_tokens(users)


def cached_service(store: CountingStore, provider: FakeProvider, tmp_path: Path,
                   online: set[tuple[str, str]], ttl: float = 60.0) -> PushService:
    from runtime.conversations import Conversations

    async def marks(user: str, conv: str) -> Watermark:
        return Watermark(0, 1)

    return PushService(Conversations(store), store, FakeDirectory(online),  # type: ignore
                       provider, marks, region="local", token_ttl=ttl)


def test_token_cache_reads_each_user_once_and_forgets_on_announcement(tmp_path: Path) -> None:
    async def go() -> None:
        store = CountingStore([])
        provider = FakeProvider()
        push = cached_service(store, provider, tmp_path, online=set())
        await push.start()
        try:
            for seq in (1, 2, 3):
                await push.notify(message(seq))
            # bob and carol (and alice) read once, not once per message
            fan_out_reads = [r for r in store.reads if len(r) > 1]
            assert fan_out_reads == [["alice", "bob", "carol"]]
            assert provider.calls == []
            # bob registers a phone: the gateway's announcement makes push read him again
            store.tokens[("bob", "phone")] = PushToken("bob", "phone", "fcm", "tok-bob")
            await push.notify(message(4))
            assert provider.calls == []  # still kept: no announcement yet
            push.forget_tokens("bob")
            assert await push.notify(message(5)) == 1
            assert [c[1].token for c in provider.calls] == ["tok-bob"]
            assert store.reads[-2:] == [["bob"], ["bob"]]  # the fan-out, then the re-check
        finally:
            await push.stop()

    asyncio.run(go())


def test_token_cache_off_reads_every_time(tmp_path: Path) -> None:
    async def go() -> None:
        store = CountingStore([PushToken("bob", "phone", "fcm", "tok-bob")])
        provider = FakeProvider()
        push = cached_service(store, provider, tmp_path, online={("bob", "phone")}, ttl=0.0)
        await push.notify(message(1))
        await push.notify(message(2))
        assert len(store.reads) == 2
        assert provider.calls == []  # bob's phone is online: nothing is opened or sent

    asyncio.run(go())
