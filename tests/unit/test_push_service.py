"""PushService: once per offline device, retries with Retry-After, token removal, dead letter."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

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
