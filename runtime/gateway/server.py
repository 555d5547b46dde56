"""Gateway runtime: WebSocket protocol v1 plus the GET-only REST surface on one port.

A thin asyncio shell around `runtime.core.session.SessionMachine`: it feeds each
session's machine the frames read from its socket and the events routed to it,
and carries out the actions the machine answers with — the local ones through
`runtime.gateway.session.Session` (queue, fills, close), the rest through
`runtime.gateway.actions.Performer`, which calls the other runtimes through their
ports. HTTP routes live in `runtime.gateway.http`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from runtime import auth, ports
from runtime.config import NodeConfig
from runtime.core import frames as f
from runtime.core import session as sm
from runtime.core.errors import CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_TRY_AGAIN
from runtime.core.ratelimit import TokenBucket
from runtime.gateway.actions import Performer
from runtime.gateway.http import SUBPROTOCOL, HttpRoutes, select_subprotocol
from runtime.gateway.session import CLOSE_GRACE, Session, encode
from runtime.media.service import MediaService
from runtime.metrics import METRICS
from runtime.ports import Event, Message, Receipt, TypingEvent, Unavailable

log = logging.getLogger("msgctl.gateway")

REGISTER_WAIT_S = 2.0  # longest a hello waits for the session directory (Redis away)
OPEN_WAIT_S = 10.0  # longest a new session waits for an engine that is away
# the machine's method for each kind of routed event
_DELIVER: dict[type, Callable[[sm.SessionMachine, Any], list[sm.Action]]] = {
    Message: sm.SessionMachine.deliver_message, Receipt: sm.SessionMachine.deliver_receipt,
    TypingEvent: sm.SessionMachine.deliver_typing}


class Gateway:
    def __init__(self, config: NodeConfig, *, store: ports.MessageStore,
                 state: ports.StateStore, conversations: ports.ConversationService,
                 ingest: ports.IngestService, receipts: ports.ReceiptService,
                 events: ports.EventPublisher, directory: ports.SessionDirectory,
                 presence: ports.PresencePort,
                 readiness: Callable[[], dict[str, str]],
                 media: MediaService | None = None) -> None:
        self.config = config
        self.media = media  # None: `upload` is answered `unavailable`
        self.store = store
        self.state = state
        self.conversations = conversations
        self.ingest = ingest
        self.receipts = receipts
        self.events = events
        self.directory = directory
        self.presence = presence
        self.readiness = readiness
        self.http = HttpRoutes(config, store, conversations, readiness, lambda: self.ready)
        self.performer = Performer(config, store=store, state=state,
                                   conversations=conversations, ingest=ingest,
                                   receipts=receipts, events=events, presence=presence,
                                   media=media)
        self.limits = f.Limits(config.limits.max_frame_bytes, config.limits.max_body_bytes)
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[str]] = defaultdict(set)
        self.server: Server | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.ready = False

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        self.server = await serve(
            self._handle, self.config.host, self.config.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            select_subprotocol=select_subprotocol,
            process_request=self.http.process_request,
            max_size=self.config.limits.hard_frame_bytes,
            # one gateway-wide keepalive (below) instead of a task per connection
            ping_interval=None,
            # reconnect storms: asyncio's default accept backlog of 100 drops handshakes
            backlog=4096,
            compression=None,
        )
        self._refresher = asyncio.create_task(self._keepalive(), name="keepalive")
        self.ready = True

    async def _keepalive(self) -> None:
        """Ping every connection each heartbeat; drop those whose last ping got no pong.

        An open connection whose peer answers is a live session, so each round
        also refreshes presence. One task serves all connections.
        """
        while True:
            await asyncio.sleep(self.config.presence.heartbeat_ms / 1000)
            for session in list(self.sessions.values()):
                if session.closing:
                    continue
                if session.ping is not None and not session.ping.done():  # type: ignore[attr-defined]
                    session.close(CLOSE_INTERNAL, "keepalive ping timeout",
                                  cause="keepalive_timeout")
                    continue
                self.presence.heartbeat(session.user, session.id)
                try:
                    # a peer that stopped reading must not hold up every other session's ping
                    session.ping = await asyncio.wait_for(session.ws.ping(), 2.0)
                except (ConnectionClosed, TimeoutError):
                    continue

    async def stop(self) -> None:
        self.ready = False
        if self._refresher is not None:
            self._refresher.cancel()
        if self.server is not None:
            self.server.close(close_connections=False)
            for session in list(self.sessions.values()):
                session.close(CLOSE_GOING_AWAY, "server shutting down, reconnect")
            await asyncio.wait_for(self.server.wait_closed(), 10)

    # -- WebSocket --------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        ident: auth.Identity = ws.identity  # type: ignore[attr-defined]
        lim = self.config.limits
        machine = sm.SessionMachine(
            ident.user, ident.device, uuid.uuid4().hex[:16], region=self.config.region,
            heartbeat_ms=self.config.presence.heartbeat_ms, limits=self.limits,
            bucket=TokenBucket(lim.rate_per_second, lim.rate_burst, lim.max_strikes))
        session = Session(ws, machine, lim.send_queue_bytes, self.store.messages)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, ident.exp - time.time()), session.expire)
        self.sessions[session.id] = session
        METRICS.connections.inc()
        try:
            if await self._patiently(session, lambda: self._open(session)):
                await self._patiently(session, lambda: self._resume_all(session))
            async for data in ws:
                # a closing machine returns nothing: the socket is still read, so the
                # peer's close frame is seen
                await self.performer.run(session, machine.receive_frame(data, time.monotonic()))
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            server_closed = session.closing
            self._close(session)
            if server_closed:  # a flushing close sends what was queued before it
                await session.drain(CLOSE_GRACE)
            session.stop_writer()
            session.finish_close()

    async def _open(self, session: Session) -> None:
        """Load the device's cursors and let the machine register and say hello
        (`_resume_all` follows). Whatever was committed between loading the cursors and
        registering is resumed: the heads are compared after the session can receive."""
        convs = await self.store.conversations_of(session.user)
        device = await self.receipts.device_cursors(session.user, session.device)
        if not device.known:
            # a new device starts at the current heads: it gets what is sent from now on
            baseline = {c: await self.ingest.head(c) for c in convs}
            await self.state.register_device(session.user, session.device, baseline)
            device.cursors = baseline
        for action in session.machine.opened(device.cursors):
            if not isinstance(action, sm.Register):
                session.apply(action)
                continue
            self.directory.register(session.user, session.device, session.id,
                                    self.config.gateway_id)
            self.by_user[session.user].add(session.id)
            self.presence.connect(session.user, session.id)
            if not await self.directory.settle(REGISTER_WAIT_S):
                log.warning("session %s not in the directory after %.0fs; saying hello "
                            "anyway", session.id, REGISTER_WAIT_S)

    async def _resume_all(self, session: Session) -> None:
        for conv in await self.store.conversations_of(session.user):
            session.apply_all(session.machine.resume(conv, await self.ingest.head(conv)))

    async def _patiently(self, session: Session, step: Callable[[], Awaitable[None]]) -> bool:
        """Run a step of opening a session, again while an engine is away (a driver still
        reconnecting after a restart); past OPEN_WAIT_S the client is told to come back
        (close 1013) instead of the connection failing as an internal error."""
        deadline = time.monotonic() + OPEN_WAIT_S
        delay = 0.2
        while True:
            try:
                await step()
                return True
            except Unavailable as exc:
                if session.closing or time.monotonic() + delay > deadline:
                    log.warning("session of %s/%s not opened: %s", session.user,
                                session.device, exc)
                    session.close(CLOSE_TRY_AGAIN, "temporarily unavailable; reconnect",
                                  flush=True)
                    return False
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def catch_up_all(self) -> None:
        """Resume every session's conversations that moved past what it was sent.

        For a cluster gateway whose event channel dropped: whatever was routed to it
        meanwhile is lost in transit but stored, so each session fills from the store.
        """
        for session in list(self.sessions.values()):
            if session.closing:
                continue
            try:
                for conv in await self.store.conversations_of(session.user):
                    head = await self.ingest.head(conv)
                    session.apply_all(session.machine.catch_up(conv, head))
            except Exception as exc:  # the next reconnect or message tries again
                log.warning("catch-up of session %s failed: %s", session.id, exc)

    def _close(self, session: Session) -> None:
        session.lost()
        session.cancel_tasks()
        self.sessions.pop(session.id, None)
        ids = self.by_user.get(session.user)
        if ids is not None:
            ids.discard(session.id)
            if not ids:
                del self.by_user[session.user]
        self.directory.unregister(session.user, session.device, session.id)
        self.presence.disconnect(session.user, session.id)
        METRICS.connections.dec()

    # -- events from the router and presence -------------------------------
    def deliver(self, event: Event, users: list[str]) -> None:
        step = _DELIVER[type(event)]
        # a message's one encoding serves every device it goes to
        text = encode(sm.msg_frame(event)) if isinstance(event, Message) else None
        for user in users:
            for sid in list(self.by_user.get(user, ())):
                session = self.sessions.get(sid)
                if session is not None:
                    for action in step(session.machine, event):
                        session.apply(action, text)

    def notify_presence(self, watchers: frozenset[str], state: Any) -> None:
        for sid in watchers:
            session = self.sessions.get(sid)
            if session is not None:
                session.apply_all(session.machine.presence(state))


__all__ = ["Gateway", "SUBPROTOCOL", "encode"]
