"""AnnouncedTokens: a gateway's push-token change is announced in every region, after the
store has it, without waiting for a region that does not answer."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from runtime.adapters.cluster.redis_bus import PUSH_TOKENS, AnnouncedTokens
from runtime.ports import PushToken


class Store:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def set_push_token(self, token: PushToken) -> None:
        self.calls.append(f"set {token.user}")

    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        self.calls.append(f"remove {user}")

    async def watermark(self, user: str, conv: str) -> str:
        return f"mark {user} {conv}"


class Redis:
    def __init__(self, behaviour: str, log: list[str]) -> None:
        self.behaviour = behaviour
        self.log = log

    async def publish(self, channel: str, payload: bytes) -> int:
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        if self.behaviour == "fail":
            raise RedisConnectionError("unreachable")
        self.log.append(f"{channel} {payload.decode()}")
        return 1


def test_changes_are_announced_everywhere_without_waiting_for_a_region_away(
        caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        store, published = Store(), []
        state = AnnouncedTokens(store, {"here": Redis("ok", published),
                                        "away": Redis("hang", published),
                                        "down": Redis("fail", published)})
        await asyncio.wait_for(state.set_push_token(PushToken("bob", "phone", "fcm", "t")),
                               1.0)  # not held up by the region that hangs
        await asyncio.wait_for(state.remove_push_token("ann", "phone"), 1.0)
        await asyncio.sleep(0.05)
        assert store.calls == ["set bob", "remove ann"]
        assert published == [f"{PUSH_TOKENS} bob", f"{PUSH_TOKENS} ann"]
        # everything else is the store's
        assert await state.watermark("bob", "c1") == "mark bob c1"
        for task in list(state._sending):
            task.cancel()

    with caplog.at_level(logging.WARNING, logger="msgctl.directory"):
        asyncio.run(go())
    assert "cannot announce bob's push tokens in region down" in caplog.text
