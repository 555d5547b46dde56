"""What a cluster gateway process uses in place of the in-process runtimes.

The gateway code is the same for both families; here are the cluster objects
it talks to: `ClusterIngest` (a send goes to `msg.ingress`, its future
resolves when the router hands back the sequenced message: durable, since the
router reads only committed events), `ClusterReceipts` (device cursors in
Cassandra, acks and reads to the sequencer, which owns the watermarks),
`KafkaTypingLog` (typing straight to `msg.events`), `PresenceClient`
(sessions, heartbeats and watches to the presence runtime over Redis), and
`GatewayLink`, which takes this gateway's channel and feeds it all back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import INGRESS, TYPING, AsyncProducer
from runtime.adapters.cluster.redis_bus import (
    PRESENCE_IN,
    PRESENCE_RESYNC,
    RedisDirectory,
    Subscriber,
    gateway_channel,
    publish,
)
from runtime.conversations import Conversations
from runtime.core.cursors import CursorBuffer
from runtime.core.presence import PresenceState
from runtime.metrics import METRICS
from runtime.ports import (
    DeviceState,
    Event,
    HomeStore,
    Message,
    MessageStore,
    Send,
    StateStore,
    TypingEvent,
    Unavailable,
)

log = logging.getLogger("msgctl.gateway")

BOUND = 100_000  # entries kept per in-memory map (conversations, devices)
SEND_TIMEOUT = 10.0  # seconds a send waits for its seq before the client is told to retry
HOME_TTL = 2.0  # seconds a gateway keeps a conversation's current home


class Ingresses:
    """`msg.ingress` of each conversation's home region: this region's Kafka, or a peer's.

    A conversation is sequenced only in its home region (set at creation, stored with
    it, and moved by `msgctl region failover|move|failback`, which writes a new epoch);
    a send or receipt from a device here for a conversation homed elsewhere is
    produced straight to that region's ingress over the inter-region link, and what
    the home sequences comes back through MirrorMaker 2. The current home is read
    from the conversation's epochs and kept HOME_TTL seconds, or until a send to it
    fails, so a failover reaches every gateway within seconds.
    """

    def __init__(self, local: AsyncProducer, region: str, peers: dict[str, str],
                 conversations: Conversations, homes: HomeStore | None = None) -> None:
        self.local = local
        self.region = region
        self.peers = dict(peers)  # region -> Kafka bootstrap
        self.conversations = conversations
        self.homes = homes
        self._producers: dict[str, AsyncProducer] = {}
        self._moved: OrderedDict[str, tuple[str, float]] = OrderedDict()  # conv -> home, until

    async def home(self, conv: str) -> str:
        moved = await self._moved_home(conv) if self.homes is not None else ""
        if moved:
            return moved
        found = await self.conversations.get(conv)
        return found.home if found is not None and found.home else self.region

    async def _moved_home(self, conv: str) -> str:
        """The home of the conversation's newest epoch; "" while it never moved."""
        assert self.homes is not None
        cached = self._moved.get(conv)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            record = await self.homes.home_record(conv)
        except Unavailable:
            # the store is away: what was known, else the home named at creation
            return cached[0] if cached is not None else ""
        home = record.home if record is not None else ""
        self._moved[conv] = (home, time.monotonic() + HOME_TTL)
        self._moved.move_to_end(conv)
        while len(self._moved) > BOUND:
            self._moved.popitem(last=False)
        return home

    def forget(self, conv: str) -> None:
        """A send to the cached home failed: read the home again next time."""
        self._moved.pop(conv, None)

    async def send(self, conv: str, value: bytes) -> None:
        home = await self.home(conv) if self.peers else self.region
        try:
            await self.producer(home).send(INGRESS, conv.encode(), value)
        except Exception:
            self.forget(conv)
            raise

    def producer(self, home: str) -> AsyncProducer:
        if home == self.region:
            return self.local
        producer = self._producers.get(home)
        if producer is None:
            bootstrap = self.peers.get(home)
            if bootstrap is None:
                raise Unavailable(f"conversation homed in region {home!r}, which this "
                                  "topology does not name")
            producer = self._producers[home] = AsyncProducer(bootstrap)
        return producer

    def close(self) -> None:
        for producer in self._producers.values():
            producer.close()


class ClusterIngest:
    def __init__(self, ingresses: Ingresses, store: MessageStore, gateway: str) -> None:
        self.ingresses = ingresses
        self.store = store
        self.gateway = gateway
        self._pending: dict[tuple[str, str, str], list[asyncio.Future[Message]]] = {}
        self._heads: OrderedDict[str, int] = OrderedDict()  # newest routed seq per conv, bounded
        self.ready = True

    def submit(self, send: Send) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()
        key = (send.conv, send.sender, send.cid)
        self._pending.setdefault(key, []).append(fut)
        record = env.send_request(send, self.gateway, self.ingresses.region)
        sent = asyncio.ensure_future(self.ingresses.send(send.conv, record))

        def produced(done: asyncio.Future[None]) -> None:
            exc = done.exception() if not done.cancelled() else None
            if exc is not None:
                self._fail(key, fut, Unavailable(f"event log unavailable: {exc}"))

        sent.add_done_callback(produced)
        timer = loop.call_later(SEND_TIMEOUT, self._fail, key, fut,
                                Unavailable("timed out waiting for the sequencer"))
        fut.add_done_callback(lambda _f: timer.cancel())
        return fut

    def _fail(self, key: tuple[str, str, str], fut: asyncio.Future[Message],
              exc: Exception) -> None:
        waiting = self._pending.get(key)
        if waiting is not None and fut in waiting:
            waiting.remove(fut)
            if not waiting:
                del self._pending[key]
        if not fut.done():
            fut.set_exception(exc)

    def resolve(self, msg: Message) -> None:
        self.note_head(msg.conv, msg.seq)
        for fut in self._pending.pop((msg.conv, msg.sender, msg.cid), ()):
            if not fut.done():
                fut.set_result(msg)

    def note_head(self, conv: str, seq: int) -> None:
        if seq > self._heads.get(conv, 0):
            self._heads[conv] = seq
            self._heads.move_to_end(conv)
            while len(self._heads) > BOUND:
                self._heads.popitem(last=False)

    def routed_head(self, conv: str) -> int:
        return self._heads.get(conv, 0)

    async def head(self, conv: str) -> int:
        # the store's head, or newer if this gateway already routed a newer message
        stored = await self.store.head(conv)
        return max(stored, self._heads.get(conv, 0))

    async def heads(self, convs: list[str]) -> dict[str, int]:
        """`head` of each of `convs`, the store's read in batches."""
        stored = await self.store.heads(convs)
        return {conv: max(stored.get(conv, 0), self._heads.get(conv, 0))
                for conv in dict.fromkeys(convs)}


class ClusterReceipts:
    """Cursors per device (written here, batched) and acks/reads sent to the sequencer."""

    def __init__(self, ingresses: Ingresses, state: StateStore, ingest: ClusterIngest) -> None:
        self.ingresses = ingresses
        self.state = state
        self.ingest = ingest
        # acks not yet in the store still count when the device syncs or reconnects
        self._cursors = CursorBuffer(BOUND)
        self._marks_out: dict[tuple[str, str, str, str], int] = {}  # acks/reads to forward
        self._flush_at: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def device_cursors(self, user: str, device: str) -> DeviceState:
        state = await self.state.device_state(user, device)
        self._cursors.overlay(user, device, state.cursors)
        return state

    async def ack(self, user: str, device: str, conv: str, seq: int) -> None:
        # a device acks what this gateway routed to it, so the local head almost always
        # covers it; the store is asked only for a seq beyond it (and the sequencer
        # clamps the watermark against its own head anyway)
        head = self.ingest.routed_head(conv)
        if seq > head:
            head = await self.ingest.head(conv)
        if self._cursors.advance(user, device, conv, seq, head):
            self._schedule(0.025)
        await self._forward("ack", user, device, conv, seq)

    async def read(self, user: str, device: str, conv: str, seq: int) -> None:
        await self._forward("read", user, device, conv, seq)

    async def _forward(self, kind: str, user: str, device: str, conv: str, seq: int) -> None:
        # cumulative: within one window only the highest ack/read of a device matters
        key = (kind, user, device, conv)
        if seq > self._marks_out.get(key, -1):
            self._marks_out[key] = seq
        self._schedule(0.025)

    async def _send_marks(self, marks: dict[tuple[str, str, str, str], int]) -> None:
        sends = [self.ingresses.send(conv, env.mark_request(kind, conv, user, device, seq))
                 for (kind, user, device, conv), seq in marks.items()]
        for (kind, _, _, conv), result in zip(marks, await asyncio.gather(
                *sends, return_exceptions=True), strict=True):
            if isinstance(result, BaseException):
                # the device's next ack carries this one too (cumulative)
                log.warning("%s for %s not forwarded: %s", kind, conv, result)

    def _schedule(self, delay: float) -> None:
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_at = None
        if self._marks_out:
            marks, self._marks_out = self._marks_out, {}
            task = asyncio.get_running_loop().create_task(self._send_marks(marks))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        if not self._cursors.pending:
            return
        dirty = self._cursors.take()
        task = asyncio.get_running_loop().create_task(self._persist(dirty))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _persist(self, dirty: dict[tuple[str, str, str], int]) -> None:
        try:
            await asyncio.gather(*(self.state.set_cursor(u, d, c, s)
                                   for (u, d, c), s in dirty.items()))
        except Exception as exc:
            log.warning("%d cursors not stored yet, retrying: %s", len(dirty), exc)
            self._cursors.requeue(dirty)
            self._schedule(1.0)

    async def flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        self._flush()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


class KafkaTypingLog:
    """The gateway's `event_log`: only typing is published from here."""

    def __init__(self, producer: AsyncProducer) -> None:
        self.producer = producer

    def publish(self, event: Event) -> None:
        if isinstance(event, TypingEvent):
            fut = self.producer.send(TYPING, event.conv.encode(), env.typing_event(event))
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class PresenceClient:
    """Reports sessions to the presence runtime; heartbeats are thinned per session."""

    def __init__(self, redis: Any, region: str, gateway: str, heartbeat_s: float) -> None:
        self.redis = redis
        self.region = region
        self.gateway = gateway
        self.every = heartbeat_s / 3
        self._sessions: dict[str, str] = {}  # session -> user
        self._watching: dict[str, tuple[str, ...]] = {}
        self._last: dict[str, float] = {}
        self._replies: dict[str, asyncio.Future[list[PresenceState]]] = {}
        self._rids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        # one publisher in order: a disconnect must not overtake the connect before it
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(100_000)
        self._task: asyncio.Task[None] | None = None
        self.ready = True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._publisher(), name="presence-reports")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _send(self, payload: dict[str, Any]) -> None:
        payload["gw"] = self.gateway
        # Redis away for long: the resync after it comes back repairs what is dropped
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(payload)

    async def _publisher(self) -> None:
        while True:
            payload = await self._out.get()
            try:
                await publish(self.redis, PRESENCE_IN, payload)
            except Exception as exc:  # presence is soft state: the next resync repairs it
                log.debug("presence report lost: %s", exc)

    def connect(self, user: str, session: str) -> None:
        self._sessions[session] = user
        self._last[session] = time.monotonic()
        self._send({"op": "connect", "user": user, "session": session})

    def heartbeat(self, user: str, session: str) -> None:
        now = time.monotonic()
        if now - self._last.get(session, 0.0) < self.every:
            return
        self._last[session] = now
        self._send({"op": "heartbeat", "user": user, "session": session})

    def disconnect(self, user: str, session: str) -> None:
        self._sessions.pop(session, None)
        self._watching.pop(session, None)
        self._last.pop(session, None)
        self._send({"op": "disconnect", "user": user, "session": session})

    async def watch(self, session: str, users: tuple[str, ...]) -> list[PresenceState]:
        self._watching[session] = users
        rid = f"{self._prefix}{next(self._rids):x}"
        fut: asyncio.Future[list[PresenceState]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        self._send({"op": "watch", "session": session, "users": list(users), "rid": rid})
        try:
            return await asyncio.wait_for(fut, 3.0)
        except TimeoutError:
            return [PresenceState(u, False, 0.0) for u in dict.fromkeys(users)]
        finally:
            self._replies.pop(rid, None)

    def on_reply(self, rid: str, states: tuple[PresenceState, ...]) -> None:
        """The decoded answer (`env.WatchReply`) to the watch named `rid`."""
        fut = self._replies.get(rid)
        if fut is not None and not fut.done():
            fut.set_result(list(states))

    def resync(self) -> None:
        for session, user in list(self._sessions.items()):
            self._send({"op": "connect", "user": user, "session": session})
        for session, users in list(self._watching.items()):
            self._send({"op": "watch", "session": session, "users": list(users), "rid": ""})


class GatewayLink:
    """This gateway's channel: routed events, send answers, presence changes and replies."""

    def __init__(self, redis: Any, region: str, gateway_id: str, ingest: ClusterIngest,
                 presence: PresenceClient, directory: RedisDirectory,
                 deliver: Callable[[Event, list[str]], None],
                 notify_presence: Callable[[frozenset[str], PresenceState], None],
                 catch_up: Callable[[], Awaitable[None]]) -> None:
        self.catch_up = catch_up
        self.ingest = ingest
        self.presence = presence
        self.directory = directory
        self.deliver = deliver
        self.notify_presence = notify_presence
        self.subscriber = Subscriber(redis, [gateway_channel(region, gateway_id), PRESENCE_RESYNC],
                                     self.handle, self._reconnected)

    async def start(self) -> None:
        await self.subscriber.start()

    async def stop(self) -> None:
        await self.subscriber.stop()

    async def _reconnected(self) -> None:
        # Redis restarted or the link dropped: what it knew of us may be gone, and what
        # was published to this channel meanwhile is lost (pub/sub keeps nothing)
        await self.directory.refresh()
        self.presence.resync()
        await self.catch_up()

    def handle(self, channel: str, raw: bytes) -> None:
        """One message on this gateway's channel (or a resync request), decoded once."""
        if channel == PRESENCE_RESYNC:
            self.presence.resync()
            return
        try:
            record = env.decode_gateway(raw)
        except ValueError as exc:
            METRICS.errors.labels("bad_gateway_record").inc()
            log.warning("dropping a malformed record on %s: %s", channel, exc)
            return
        if isinstance(record, env.EventsBatch):
            sends = [i.event.message.ts for i in record.items
                     if isinstance(i.event, env.MessageRecord)]
            if sends:  # the router's publish lag, one hop on: the queue in front of this loop
                METRICS.gateway_lag_seconds.observe(max(0.0, time.time() - min(sends) / 1000))
            for error in record.errors:  # one bad item must not drop the others' messages
                METRICS.errors.labels("bad_gateway_record").inc()
                log.warning("dropping a malformed event on %s: %s", channel, error)
            for item in record.items:
                try:
                    self._event(item)
                except Exception:
                    log.exception("event from the router failed: %r", item)
        elif isinstance(record, env.PresenceChange):
            self.notify_presence(frozenset(record.sessions), record.state)
        else:
            self.presence.on_reply(record.rid, record.states)

    def _event(self, item: env.RoutedEvent) -> None:
        e = item.event
        if isinstance(e, env.DuplicateAnswer):
            self.ingest.resolve(e.original)
            return
        event = e.port_event()
        if isinstance(event, Message):
            self.ingest.resolve(event)
        if item.users:
            self.deliver(event, list(item.users))
