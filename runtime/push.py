"""Push runtime: notifies offline devices that registered a token.

For each new message, every member device other than the sender's that has a
push token and no live session gets one notification through the provider
(never two for a message; none when a queue below drops it), collapsed per
conversation, with the unread count as the badge (and no message body when the
topology says `hide_body`).

Queueing is fair (`runtime.core.fairqueue`), in two stages, so that one busy
conversation cannot starve anyone else's notification:

1. Messages wait for their fan-out (who gets a notification) in a queue per
   conversation (`conv_queue` messages; a conversation's oldest is dropped
   beyond that) served round-robin, at most `max_convs` conversations waiting
   or being fanned out (a message of any other is dropped).
   A conversation is fanned out by one worker at a time, `FANOUT_WORKERS` at once.
2. Each notification waits in its device's queue (per device token:
   `device_queue` notifications; beyond that the device's older notification
   for the same conversation, else its oldest, is dropped) served round-robin,
   one notification of a device at a time, by `concurrency` senders. At most
   `max_devices` devices are queued; a fan-out that meets a new device when
   all are taken waits for a slot, the waiting fan-outs getting the freed
   slots in turn (nothing is dropped for the global bound).

Just before each attempt the token is checked to be still the device's (a
token unregistered with `push_unregister`, or moved to the account that
registered it last, gets nothing more).

The cluster's push runtime keeps each user's tokens for `token_ttl` seconds
(`runtime.core.ttlcache`) instead of reading them from the store for every
message; the gateway that registers or removes a token announces it, and the
user is read again at once (the TTL bounds a missed announcement). The body is
opened only once a message has a device to notify.

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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime import keyring as keyring_mod
from runtime.config import NodeConfig
from runtime.core.fairqueue import COLLAPSED, FULL, OVERFLOW, FairQueue, Offered
from runtime.core.sealing import SealError
from runtime.core.ttlcache import TtlCache
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
DEVICE_QUEUE = 8  # notifications waiting per device token
MAX_DEVICES = 10_000  # device tokens with notifications waiting or being sent
CONV_QUEUE = 8  # messages of one conversation waiting for their fan-out
MAX_CONVS = 2_000  # conversations with messages waiting for, or in, their fan-out
# conversations fanned out at once: a fan-out waiting for a device slot holds one of these
# (a coroutine, nothing more), so there are enough that a few huge groups leave room
FANOUT_WORKERS = 16


def _error_fields(exc: BaseException) -> tuple[str, bool, bool, float | None]:
    """(reason, retryable, invalid_token, retry_after) of any provider exception."""
    reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
    status = getattr(exc, "status", 0)
    if status:
        reason = f"{status} {reason}"
    return (str(reason), bool(getattr(exc, "retryable", True)),
            bool(getattr(exc, "invalid_token", False)), getattr(exc, "retry_after", None))


class _Job:
    """One message's notifications; resolves the event feed's future once all were handled."""

    __slots__ = ("future", "left", "sealed")

    def __init__(self, future: asyncio.Future[None] | None) -> None:
        self.future = future
        self.left = 0  # notifications queued or being sent
        self.sealed = False  # its fan-out has queued all it will

    def add(self) -> None:
        self.left += 1

    def finish(self) -> None:
        """One notification was sent, failed or dropped."""
        self.left -= 1
        self._settle()

    def seal(self) -> None:
        self.sealed = True
        self._settle()

    def _settle(self) -> None:
        if self.sealed and self.left <= 0 and self.future is not None \
                and not self.future.done():
            self.future.set_result(None)


@dataclass(frozen=True)
class _Note:
    """One notification waiting in its device's queue."""

    token: PushToken
    payload: dict[str, Any]
    job: _Job


# what a device queue's drop is counted as
_DROPPED = {COLLAPSED: "dropped_collapsed", OVERFLOW: "dropped_device_full",
            FULL: "dropped_queue_full"}


class PushService:
    def __init__(self, conversations: ConversationService, state: StateStore,
                 directory: DeviceLocator, provider: PushProvider,
                 marks: Callable[[str, str], Awaitable[Watermark]], *,
                 hide_body: bool = False, device_queue: int = DEVICE_QUEUE,
                 max_devices: int = MAX_DEVICES, conv_queue: int = CONV_QUEUE,
                 max_convs: int = MAX_CONVS, fanout_workers: int = FANOUT_WORKERS,
                 max_attempts: int = MAX_ATTEMPTS, backoff: float = 0.2,
                 backoff_max: float = 30.0, concurrency: int = 8,
                 deadletter: Path | None = None, region: str = "",
                 opener: Callable[[Message], Message] | None = None,
                 token_ttl: float = 0.0) -> None:
        self.conversations = conversations
        # each user's tokens, kept `token_ttl` s (0: read for every message)
        self._tokens: TtlCache[str, list[PushToken]] = TtlCache(token_ttl)
        # bodies arrive sealed (`runtime.keyring`): a notification shows the opened one
        self.opener = opener
        self.state = state
        self.directory = directory
        self.provider = provider
        self.marks = marks
        self.hide_body = hide_body
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.concurrency = max(1, concurrency)
        self.fanout_workers = max(1, fanout_workers)
        self.deadletter = deadletter
        self.region = region
        # stage 1: messages per conversation, waiting to be fanned out to their devices
        self._intake: FairQueue[str, tuple[Message, _Job]] = FairQueue(conv_queue, max_convs)
        # stage 2: notifications per device token, waiting to be sent
        self._queue: FairQueue[str, _Note] = FairQueue(device_queue, max_devices)
        self._intake_ready = asyncio.Event()
        self._queue_ready = asyncio.Event()
        # fan-outs waiting for a device slot, in arrival order (the head gets the next one)
        self._slot_waiters: deque[asyncio.Event] = deque()
        self._fanning = 0
        self._sending = 0
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False
        # read when /metrics is scraped: setting it on every change cost the push
        # runtime about a tenth of its event loop at 2,000 msgs/s (a lock per set)
        METRICS.push_queue.set_function(lambda: self.depth)

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
        offered = self._intake.offer(event.conv, (event, _Job(done)))
        if offered.dropped is not None:
            # too many conversations waiting (this message), or this conversation's oldest
            _, dropped = offered.dropped
            METRICS.push.labels("dropped_queue_full" if offered.reason == FULL
                                else "dropped_conversation_full").inc()
            dropped.seal()
        if offered.accepted:
            self._intake_ready.set()
        return done

    @property
    def depth(self) -> int:
        """Messages waiting for or in their fan-out, plus notifications waiting or being sent
        (retries included)."""
        return self._intake.items + self._fanning + self._queue.items + self._sending

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._fan_out(), name=f"push-fan-out-{i}")
                       for i in range(self.fanout_workers)]
        self._tasks += [asyncio.create_task(self._send(), name=f"push-{i}")
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

    async def _fan_out(self) -> None:
        """Stage 1: a message of the next conversation -> its devices' queues."""
        while True:
            got = self._intake.take()
            if got is None:
                self._intake_ready.clear()
                await self._intake_ready.wait()
                continue
            conv, (msg, job) = got
            self._fanning += 1
            try:
                for token, payload in await self._recipients(msg):
                    await self._admit(token.token)
                    # no await from the admission to the offer: the slot cannot be taken
                    job.add()
                    offered = self._queue.offer(token.token, _Note(token, payload, job),
                                                collapse=msg.conv)
                    if offered.dropped is not None:
                        self._drop(offered)
                    self._queue_ready.set()
            except Exception:
                log.exception("push fan-out for %s/%s failed", msg.conv, msg.seq)
            finally:
                self._fanning -= 1
                job.seal()
                self._intake.done(conv)
                if self._intake.waiting_keys:
                    self._intake_ready.set()

    async def _admit(self, device: str) -> None:
        """Wait until `device` may be queued: at once if it is queued already, or a slot is
        free and no fan-out waits for one; otherwise in turn as slots free up."""
        if device in self._queue or (not self._slot_waiters and self._queue.has_room(device)):
            return
        turn = asyncio.Event()
        self._slot_waiters.append(turn)
        try:
            while not (device in self._queue or (self._slot_waiters[0] is turn
                                                 and self._queue.has_room(device))):
                turn.clear()
                await turn.wait()
        finally:
            self._slot_waiters.remove(turn)
            self._wake_slot_waiter()

    def _wake_slot_waiter(self) -> None:
        if self._slot_waiters:
            self._slot_waiters[0].set()

    def _drop(self, offered: Offered[_Note]) -> None:
        """A device queue was full: one of its notifications (never another device's) goes."""
        note = offered.dropped
        assert note is not None
        METRICS.push.labels(_DROPPED[offered.reason]).inc()
        note.job.finish()

    async def _send(self) -> None:
        """Stage 2: the next device's oldest notification -> its provider."""
        while True:
            got = self._queue.take()
            if got is None:
                self._queue_ready.clear()
                await self._queue_ready.wait()
                continue
            device, note = got
            self._sending += 1
            try:
                await self.deliver(note.token, note.payload)
            except Exception:
                log.exception("push to %s/%s failed", note.token.user, note.token.device)
            finally:
                self._sending -= 1
                note.job.finish()
                if self._queue.done(device):
                    self._wake_slot_waiter()  # the device's slot is free again
                elif self._queue.waiting_keys:
                    self._queue_ready.set()  # its next notification is back in the rotation

    def payload(self, msg: Message, mark: Watermark) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "collapse_key": msg.conv, "conv": msg.conv, "seq": msg.seq,
            "from": msg.sender, "kind": msg.kind, "ts": msg.ts,
            "badge": max(1, msg.seq - mark.read),
        }
        if not self.hide_body:
            payload["body"] = msg.body
        return payload

    def forget_tokens(self, user: str | None = None) -> None:
        """`user`'s tokens changed (None: anyone's may have): read them again."""
        if user is None:
            self._tokens.clear()
        else:
            self._tokens.forget(user)

    async def tokens_of(self, users: list[str]) -> list[PushToken]:
        """The push tokens of `users`: kept ones, and the rest read in one store call."""
        now = time.monotonic()
        out: list[PushToken] = []
        missing: list[str] = []
        for user in dict.fromkeys(users):
            hit, tokens = self._tokens.get(user, now)
            if hit:
                out.extend(tokens or ())
            else:
                missing.append(user)
        if missing:
            tickets = {u: self._tokens.ticket(u) for u in missing}
            read = await self.state.push_tokens(missing)
            by_user: dict[str, list[PushToken]] = {u: [] for u in missing}
            for t in read:
                by_user.setdefault(t.user, []).append(t)
            now = time.monotonic()
            for user, tokens in by_user.items():
                if user in tickets:
                    self._tokens.put(user, tokens, now, tickets[user])
            out.extend(read)
        return out

    async def _recipients(self, msg: Message) -> list[tuple[PushToken, dict[str, Any]]]:
        """Each offline member device with a token, but the sender's, with its payload."""
        conv = await self.conversations.get(msg.conv)
        if conv is None:
            return []

        async def offline(token: PushToken) -> PushToken | None:
            return None if await self.directory.device_online(token.user, token.device) \
                else token

        # the lookups of a big group's members at once, not one round trip after another
        found = [t for t in await asyncio.gather(*(
            offline(t) for t in await self.tokens_of(list(conv.members))
            if not (t.user == msg.sender and t.device == msg.from_device))) if t is not None]
        if not found:
            return []  # the usual case: nothing to open or count
        if self.opener is not None and not self.hide_body:
            try:
                msg = self.opener(msg)
            except SealError as exc:  # a keyring that lost a key: notify without the body
                log.error("push of %s/%d without its body: %s", msg.conv, msg.seq, exc)
                msg = replace(msg, body="")
        marks = await asyncio.gather(*(self.marks(t.user, msg.conv) for t in found))
        return [(t, self.payload(msg, mark)) for t, mark in zip(found, marks, strict=True)]

    async def notify(self, msg: Message) -> int:
        """Notify a message's devices now, past the queues; how many were sent."""
        results = await asyncio.gather(*(self.deliver(token, payload)
                                         for token, payload in await self._recipients(msg)))
        return sum(1 for ok, _ in results if ok)

    async def _registered(self, token: PushToken) -> bool:
        """Whether `token` is still its device's: not unregistered, not moved to the account
        that registered it last (whose notifications only are for that device now)."""
        return token in await self.state.push_tokens([token.user])

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
                # checked before every attempt: a notification may wait in its queue, or for
                # a retry, while the device logs out or another account takes its token
                if not await self._registered(token):
                    METRICS.push.labels("dropped_unregistered").inc()
                    log.info("push to %s/%s: token no longer registered; dropped", token.user,
                             token.device)
                    return False, {"error": "token no longer registered", "attempts": attempt - 1}
                answer = await self.provider.send(token, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason, retryable, invalid, retry_after = _error_fields(exc)
                if invalid:
                    await self.state.remove_push_token(token.user, token.device, token.token)
                    self.forget_tokens(token.user)
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
                 marks: Callable[[str, str], Awaitable[Watermark]], *,
                 token_ttl: float = 0.0) -> PushService:
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
                       region=config.region,
                       opener=keyring_mod.shared(config.keyring).open_message
                       if config.keyring else None,
                       token_ttl=token_ttl)
