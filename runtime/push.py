"""Push runtime: notifies offline devices that registered a token.

For each new message, every member device other than the sender's that has a
push token and no live session gets exactly one notification through the
provider, collapsed per conversation, with the unread count as the badge (and
no message body when the topology says `hide_body`).

Failures: 429/5xx and network errors are retried with exponential backoff and
jitter, waiting at least what a provider's Retry-After asks; a dead token (FCM
UNREGISTERED, APNs 410) is removed from the store; after the last attempt a
dead-letter record (JSON lines) says why. Outcomes are counted in
`msgctl_push{outcome}`: sent, retried, failed, dropped_<reason>.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from runtime.config import NodeConfig
from runtime.core.watermarks import Watermark
from runtime.metrics import METRICS
from runtime.ports import (
    ConversationService,
    DeviceLocator,
    Event,
    Message,
    PushProvider,
    PushToken,
    StateStore,
)

MAX_BACKOFF_MS = 60_000

log = logging.getLogger("msgctl.push")

MAX_ATTEMPTS = 5
SEEN_MESSAGES = 100_000  # (conv, seq) remembered so a redelivered event notifies no one twice


def _error_fields(exc: BaseException) -> tuple[str, bool, bool, float | None]:
    """(reason, retryable, invalid_token, retry_after) of any provider exception."""
    reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
    status = getattr(exc, "status", 0)
    if status:
        reason = f"{status} {reason}"
    return (str(reason), bool(getattr(exc, "retryable", True)),
            bool(getattr(exc, "invalid_token", False)), getattr(exc, "retry_after", None))


class PushService:
    def __init__(self, conversations: ConversationService, state: StateStore,
                 directory: DeviceLocator, provider: PushProvider,
                 marks: Callable[[str, str], Awaitable[Watermark]], *,
                 hide_body: bool = False, queue_size: int = 10_000,
                 max_attempts: int = MAX_ATTEMPTS, backoff: float = 0.2,
                 backoff_max: float = 30.0, concurrency: int = 8,
                 deadletter: Path | None = None, region: str = "") -> None:
        self.conversations = conversations
        self.state = state
        self.directory = directory
        self.provider = provider
        self.marks = marks
        self.hide_body = hide_body
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.concurrency = max(1, concurrency)
        self.deadletter = deadletter
        self.region = region
        # each message with the future the event feed waits on before committing past it
        self._queue: asyncio.Queue[tuple[Message, asyncio.Future[None] | None]] = \
            asyncio.Queue(queue_size)
        self._inflight = 0
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    def on_event(self, event: Event) -> asyncio.Future[None] | None:
        """Queue a message's notifications; the future resolves once they were handled.

        The cluster's event feed commits its offset past an event only after that (a
        push runtime that dies with notifications queued gets them again, not never).
        """
        if not isinstance(event, Message):
            return None
        key = (event.conv, event.seq)
        if key in self._seen:
            return None
        self._seen[key] = None
        if len(self._seen) > SEEN_MESSAGES:
            self._seen.popitem(last=False)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((event, done))
        except asyncio.QueueFull:
            METRICS.push.labels("dropped_queue_full").inc()
            done.set_result(None)
        self._gauge()
        return done

    @property
    def depth(self) -> int:
        """Messages waiting, plus those being notified (retries included)."""
        return self._queue.qsize() + self._inflight

    def _gauge(self) -> None:
        METRICS.push_queue.set(self.depth)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"push-{i}")
                       for i in range(self.concurrency)]
        warm_up = getattr(self.provider, "warm_up", None)
        if warm_up is not None:
            self._tasks.append(asyncio.create_task(warm_up(), name="push-warm-up"))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                log.exception("closing the push provider")

    async def _run(self) -> None:
        while True:
            msg, done = await self._queue.get()
            self._inflight += 1
            self._gauge()
            try:
                await self.notify(msg)
            except Exception:
                log.exception("push for %s/%s failed", msg.conv, msg.seq)
            finally:
                self._inflight -= 1
                self._gauge()
                if done is not None and not done.done():
                    done.set_result(None)

    def payload(self, msg: Message, mark: Watermark) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "collapse_key": msg.conv, "conv": msg.conv, "seq": msg.seq,
            "from": msg.sender, "kind": msg.kind, "ts": msg.ts,
            "badge": max(1, msg.seq - mark.read),
        }
        if not self.hide_body:
            payload["body"] = msg.body
        return payload

    async def notify(self, msg: Message) -> int:
        conv = await self.conversations.get(msg.conv)
        if conv is None:
            return 0
        jobs = []
        for token in await self.state.push_tokens(list(conv.members)):
            if token.user == msg.sender and token.device == msg.from_device:
                continue
            if await self.directory.device_online(token.user, token.device):
                continue
            mark = await self.marks(token.user, msg.conv)
            jobs.append(self.deliver(token, self.payload(msg, mark)))
        results = await asyncio.gather(*jobs)
        return sum(1 for ok, _ in results if ok)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        delay = backoff * random.uniform(0.5, 1.0)  # jitter: retries of a burst spread out
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    async def deliver(self, token: PushToken,
                      payload: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """One notification to one device; (sent, the provider's answer or the failure)."""
        reason, retryable = "", True
        for attempt in range(1, self.max_attempts + 1):
            try:
                answer = await self.provider.send(token, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason, retryable, invalid, retry_after = _error_fields(exc)
                if invalid:
                    await self.state.remove_push_token(token.user, token.device, token.token)
                    METRICS.push.labels("dropped_invalid_token").inc()  # counted once gone
                    log.info("push to %s/%s: token invalid (%s); removed", token.user,
                             token.device, reason)
                    return False, {"error": reason, "removed": True, "attempts": attempt}
                if not retryable or attempt == self.max_attempts:
                    break
                METRICS.push.labels("retried").inc()
                delay = self._delay(attempt, retry_after)
                log.info("push to %s/%s: %s; retry %d in %.2fs", token.user, token.device,
                         reason, attempt, delay)
                await asyncio.sleep(delay)
                continue
            METRICS.push.labels("sent").inc()
            return True, answer if isinstance(answer, dict) else {"answer": answer}
        METRICS.push.labels("failed").inc()
        METRICS.push.labels("dropped_retries_exhausted" if retryable else "dropped_rejected").inc()
        self._dead_letter(token, payload, reason, attempt)
        return False, {"error": reason, "attempts": attempt, "dead_letter": True}

    def _dead_letter(self, token: PushToken, payload: dict[str, Any], reason: str,
                     attempts: int) -> None:
        log.error("push to %s/%s dead-lettered after %d attempt(s): %s", token.user,
                  token.device, attempts, reason)
        if self.deadletter is None:
            return
        record = {"ts": int(time.time() * 1000), "region": self.region, "user": token.user,
                  "device": token.device, "platform": token.platform,
                  "conv": payload.get("conv"), "seq": payload.get("seq"), "reason": reason,
                  "attempts": attempts}
        try:
            self.deadletter.parent.mkdir(parents=True, exist_ok=True)
            with self.deadletter.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            log.error("cannot write the dead-letter record to %s: %s", self.deadletter, exc)


def push_service(config: NodeConfig, conversations: ConversationService, state: StateStore,
                 directory: DeviceLocator, provider: PushProvider,
                 marks: Callable[[str, str], Awaitable[Watermark]]) -> PushService:
    """The push runtime of a node, with its `push` config's settings."""
    p = config.push
    data = Path(config.data_dir)
    return PushService(conversations, state, directory, provider, marks,
                       hide_body=p.hide_body,
                       max_attempts=p.max_attempts, backoff=p.backoff_ms / 1000,
                       # a provider's Retry-After must not park a worker for long
                       backoff_max=min(p.backoff_max_ms, MAX_BACKOFF_MS) / 1000,
                       concurrency=p.concurrency,
                       deadletter=data / f"push-deadletter-{config.region}.jsonl",
                       region=config.region)
