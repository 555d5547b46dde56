"""Carries out a session machine's requests through the services the gateway holds.

`runtime.core.session.SessionMachine` answers a frame with actions; the local
ones (`Reply`, `Deliver`, `Close`, `Fill`) the connection's `Session` carries
out itself, the others are I/O — a conversation lookup, a store read, a send
to the sequencer — and are done here, feeding each answer back to the machine
and carrying out what it says next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from runtime.config import NodeConfig
from runtime.core import session as sm
from runtime.gateway.session import Session
from runtime.media.service import MediaService, client_host
from runtime.metrics import METRICS, labelled
from runtime.ports import (
    Conversation,
    ConversationService,
    EventPublisher,
    IngestService,
    Message,
    MessageStore,
    PresencePort,
    PushToken,
    ReceiptService,
    Send,
    StateStore,
    TypingEvent,
    Unavailable,
)

log = logging.getLogger("msgctl.gateway")

# actions the Session carries out itself: they touch only its connection and never fail
LOCAL = (sm.Reply, sm.Deliver, sm.Close, sm.Fill)
YIELD_EVERY_S = 0.002  # longest a loop over a user's conversations runs without a yield


class Pacer:
    """Awaited once per step of a long loop: yields to the event loop when YIELD_EVERY_S
    of work ran without one. Short store reads complete without suspending, so a loop
    over thousands of conversations would otherwise hold up every other session."""

    def __init__(self, every_s: float = YIELD_EVERY_S) -> None:
        self.every_s = every_s
        self._since = time.monotonic()

    async def __call__(self) -> None:
        if time.monotonic() - self._since >= self.every_s:
            await asyncio.sleep(0)
            self._since = time.monotonic()


class Performer:
    """The services a session's requests go to; one serves every session of a gateway."""

    def __init__(self, config: NodeConfig, *, store: MessageStore, state: StateStore,
                 conversations: ConversationService, ingest: IngestService,
                 receipts: ReceiptService, events: EventPublisher, presence: PresencePort,
                 media: MediaService | None,
                 seal: Callable[[Send], Send] = lambda send: send) -> None:
        self.config = config
        self.seal = seal  # bodies and media are sealed before anything leaves the gateway
        self.store = store
        self.state = state
        self.conversations = conversations
        self.ingest = ingest
        self.receipts = receipts
        self.events = events
        self.presence = presence
        self.media = media

    async def run(self, s: Session, actions: list[sm.Action]) -> bool:
        """Carry out actions in order. One that fails ends the list (and what it would have
        led to) with an error reply to its frame; the connection stays open."""
        for action in actions:
            if isinstance(action, LOCAL):
                s.apply(action)
                continue
            # every accepted frame carries these two: kept off the awaited path
            if isinstance(action, sm.Heartbeat):
                self.presence.heartbeat(s.user, s.id)
                continue
            if isinstance(action, sm.Received):
                labelled(METRICS.frames_in, action.kind).inc()
                continue
            try:
                follow = await self.perform(s, action)
            except Exception as exc:
                if isinstance(exc, Unavailable):  # an engine is away: the client retries
                    log.warning("%r from %s: %s", action, s.user, exc)
                else:
                    log.exception("%r from %s failed", action, s.user)
                s.apply_all(s.machine.failed(getattr(action, "id", None),
                                             retryable=isinstance(exc, Unavailable)))
                return False
            if follow and not await self.run(s, follow):
                return False
        return True

    async def perform(self, s: Session, action: sm.Action) -> list[sm.Action]:
        """Do one request of the machine; returns what the machine says next."""
        m = s.machine
        match action:
            case sm.Authorize():
                return m.authorized(action, await self.conversations.get(action.frame.conv or ""))
            case sm.ForwardAck():
                await self.receipts.ack(s.user, s.device, action.conv, action.seq)
            case sm.ForwardRead():
                await self.receipts.read(s.user, s.device, action.conv, action.seq)
            case sm.PublishTyping():
                self.events.publish(TypingEvent(action.conv, s.user))
            case sm.ReadHistory():
                page = await self.store.messages(action.conv, action.after, action.limit + 1)
                return m.history(action, action.conv, page)
            case sm.ReadBacklog():
                device = await self.receipts.device_cursors(s.user, s.device)
                convs = await self.store.conversations_of(s.user)
                # the heads in batches, then a read only of the conversations with
                # something past the device's cursor (an empty page adds nothing to the
                # reply), not one read each of thousands of conversations
                heads = await self.ingest.heads(convs)
                pace = Pacer()
                for conv in convs:
                    await pace()
                    after = device.cursors.get(conv, 0)
                    if heads[conv] <= after:
                        continue
                    # a user in thousands of conversations: one batch after another as
                    # the device reads them, never a queue overrun (close 1013, and a
                    # client that syncs again would loop)
                    await s.wait_room()
                    if s.closing:
                        return []
                    page = await self.store.messages(conv, after, action.limit + 1)
                    for reply in m.history(action, conv, page):
                        s.apply(reply, paced=True)
                return m.synced(action)
            case sm.CreateConversation():
                if await self.conversations.get(action.conv) is None:
                    full = await self._at_conversation_cap(action.members)
                    if full is not None:
                        return m.capped(action, f"'{full}' is in "
                                        f"{self.config.limits.max_conversations_per_user} "
                                        "conversations, the most allowed")
                wanted = Conversation(action.conv, action.members, action.home, action.title,
                                      int(time.time() * 1000))
                return m.created(action, await self.conversations.create(wanted))
            case sm.WatchPresence():
                return m.watched(action, await self.presence.watch(s.id, action.users))
            case sm.RegisterPush():
                await self.state.set_push_token(PushToken(s.user, s.device, action.platform,
                                                          action.token))
            case sm.UnregisterPush():
                await self.state.remove_push_token(s.user, s.device)  # idempotent
            case sm.RequestUpload():
                request = s.ws.request
                # several Host headers (Headers.get would raise): which one the client
                # reached is unknown, so the URLs name the region's own host
                hosts = request.headers.get_all("Host") if request is not None else []
                host = client_host(hosts[0] if len(hosts) == 1 else None, self.config.host)
                return m.upload_slot(action, None if self.media is None else self.media.slot(
                    s.user, action.kind, action.content_type, action.size, host))
            case sm.AttachMedia():
                # the URL goes to every recipient: built from the region's own address (or
                # the topology's public_url), never from a header the sender chose
                checked = None if self.media is None else await self.media.attach(
                    s.user, action.frame.kind, action.frame.media, self.config.host)
                return m.attached(action, checked)
            case sm.Submit():
                await self.submit(s, action)
            case _:
                raise TypeError(f"not a request: {action!r}")
        return []

    async def _at_conversation_cap(self, members: tuple[str, ...]) -> str | None:
        """The first member already in as many conversations as a user may be, if any (a
        user made a member of unbounded conversations would stall every sync and resume
        of theirs)."""
        cap = self.config.limits.max_conversations_per_user
        for i in range(0, len(members), 50):  # bounded concurrency against the store
            chunk = members[i:i + 50]
            counts = await asyncio.gather(*(self.store.conversations_of(u) for u in chunk))
            for user, convs in zip(chunk, counts, strict=True):
                if len(convs) >= cap:
                    return user
        return None

    async def submit(self, s: Session, action: sm.Submit) -> None:
        if s.inflight is None:
            s.inflight = asyncio.Semaphore(self.config.limits.inflight_sends)
        inflight = s.inflight
        await inflight.acquire()  # back-pressure: stop reading this socket while it is full
        t0 = time.perf_counter()
        fut = self.ingest.submit(self.seal(Send(
            action.conv, action.cid, action.user, action.device, action.kind, action.body,
            action.media, int(time.time() * 1000))))

        def done(fut: asyncio.Future[Message]) -> None:
            # a callback, not a task per send: the hot path stays cheap
            inflight.release()
            m = s.machine
            if fut.cancelled():
                s.apply_all(m.not_sent(action, retryable=True))
                return
            exc = fut.exception()
            if exc is None:
                METRICS.send_seconds.observe(time.perf_counter() - t0)
                s.apply_all(m.sent(action, fut.result()))
            elif isinstance(exc, Unavailable):
                s.apply_all(m.not_sent(action, retryable=True, detail=str(exc)))
            else:
                log.error("send %s/%s failed: %r", action.conv, action.cid, exc)
                s.apply_all(m.not_sent(action, retryable=False))
        fut.add_done_callback(done)
