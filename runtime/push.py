"""Push runtime: notifies offline devices that registered a token.

For each new message, every member device other than the sender's that has a
push token and no live session gets one notification through the provider,
collapsed per conversation, with the unread count as the badge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS
from runtime.ports import Event, Message, PushProvider, PushToken, SessionDirectory, StateStore
from runtime.sequencer import Conversations

log = logging.getLogger("msgctl.push")

MAX_ATTEMPTS = 4


class PushService:
    def __init__(self, conversations: Conversations, state: StateStore,
                 directory: SessionDirectory, provider: PushProvider,
                 marks: Callable[[str, str], Awaitable[Watermark]], *,
                 hide_body: bool = False, queue_size: int = 10_000) -> None:
        self.conversations = conversations
        self.state = state
        self.directory = directory
        self.provider = provider
        self.marks = marks
        self.hide_body = hide_body
        self._queue: asyncio.Queue[Message] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    def on_event(self, event: Event) -> None:
        if not isinstance(event, Message):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            METRICS.push.labels("dropped_queue_full").inc()
        METRICS.push_queue.set(self._queue.qsize())

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="push")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            msg = await self._queue.get()
            METRICS.push_queue.set(self._queue.qsize())
            try:
                await self.notify(msg)
            except Exception:
                log.exception("push for %s/%s failed", msg.conv, msg.seq)

    async def notify(self, msg: Message) -> int:
        conv = await self.conversations.get(msg.conv)
        if conv is None:
            return 0
        sent = 0
        for token in await self.state.push_tokens(list(conv.members)):
            if token.user == msg.sender and token.device == msg.from_device:
                continue
            if await self.directory.device_online(token.user, token.device):
                continue
            mark = await self.marks(token.user, msg.conv)
            payload = {
                "collapse_key": msg.conv, "conv": msg.conv, "seq": msg.seq,
                "from": msg.sender, "kind": msg.kind,
                "badge": max(1, msg.seq - mark.read),
            }
            if not self.hide_body:
                payload["body"] = msg.body
            if await self._send(token, payload):
                sent += 1
        return sent

    async def _send(self, token: PushToken, payload: dict[str, object]) -> bool:
        delay = 0.2
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await self.provider.send(token, payload)
                METRICS.push.labels("sent").inc()
                return True
            except Exception as exc:
                if attempt == MAX_ATTEMPTS:
                    METRICS.push.labels("failed").inc()
                    log.error("push to %s/%s dead-lettered: %s", token.user, token.device, exc)
                    return False
                METRICS.push.labels("retried").inc()
                await asyncio.sleep(delay)
                delay *= 2
        return False
