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
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from runtime import auth, ports
from runtime import keyring as keyring_mod
from runtime.config import NodeConfig
from runtime.core import frames as f
from runtime.core import paging
from runtime.core import session as sm
from runtime.core.errors import CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_TRY_AGAIN
from runtime.core.ratelimit import TokenBucket
from runtime.core.sealing import SealError
from runtime.gateway.actions import Performer
from runtime.gateway.connection import SUBPROTOCOL, Connection
from runtime.gateway.http import HttpRoutes, address
from runtime.gateway.sealed import OpenedStore
from runtime.gateway.session import CLOSE_GRACE, Session, encode
from runtime.media.service import MediaService
from runtime.metrics import METRICS
from runtime.ports import Event, Message, Receipt, TypingEvent, Unavailable
from runtime.tls import server_tls

log = logging.getLogger("msgctl.gateway")

REGISTER_WAIT_S = 2.0  # longest a hello waits for the session directory (Redis away)
RESUME_SLICE = 500  # conversations resumed between two yields to the event loop
# fills started between two yields: each reads its first page (short reads complete
# without suspending) the next time the loop runs, all in that one turn
RESUME_FILLS = 32
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
        # bodies and media are sealed on the way in and opened on the way out
        self.keyring = keyring_mod.shared(config.keyring) if config.keyring else None
        if self.keyring is not None:
            store = OpenedStore(store, self.keyring)
        self.store = store
        self.state = state
        self.conversations = conversations
        self.ingest = ingest
        self.receipts = receipts
        self.events = events
        self.directory = directory
        self.presence = presence
        self.readiness = readiness
        self.http = HttpRoutes(config, store, conversations, readiness, lambda: self.ready,
                               self._admit)
        self.performer = Performer(config, store=store, state=state,
                                   conversations=conversations, ingest=ingest,
                                   receipts=receipts, events=events, presence=presence,
                                   media=media, **({"seal": self.keyring.seal_send}
                                                   if self.keyring is not None else {}))
        self.limits = f.Limits(config.limits.max_frame_bytes, config.limits.max_body_bytes,
                               paging.budget(config.limits.send_queue_bytes))
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[str]] = defaultdict(set)
        # open connections (from the handshake to the close), for the caps on them
        self.conns_by_user: Counter[str] = Counter()
        self.conns_by_address: Counter[str] = Counter()
        self.server: Server | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.ready = False

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        self.server = await serve(
            self._handle, self.config.host, self.config.port,
            subprotocols=[SUBPROTOCOL],
            create_connection=Connection,  # picks the subprotocol, freed once closed
            process_request=self.http.process_request,
            max_size=self.config.limits.hard_frame_bytes,
            # one gateway-wide keepalive (below) instead of a task per connection
            ping_interval=None,
            # reconnect storms: asyncio's default accept backlog of 100 drops handshakes
            backlog=4096,
            compression=None,
            # a client that never finishes the upgrade holds a socket: drop it
            open_timeout=self.config.limits.handshake_timeout_s,
            **self._tls(),
        )
        self._refresher = asyncio.create_task(self._keepalive(), name="keepalive")
        self.ready = True

    def _tls(self) -> dict[str, Any]:
        """wss:// when the node has a certificate; the TLS handshake gets the same bound as
        the HTTP one (asyncio's default would let a silent client hold a socket 60 s)."""
        ctx = server_tls(self.config)
        if ctx is None:
            return {}
        return {"ssl": ctx, "ssl_handshake_timeout": self.config.limits.handshake_timeout_s}

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
        assert isinstance(ws, Connection)  # serve(create_connection=Connection)
        ident: auth.Identity = ws.identity  # type: ignore[attr-defined]
        lim = self.config.limits
        machine = sm.SessionMachine(
            ident.user, ident.device, uuid.uuid4().hex[:16], region=self.config.region,
            heartbeat_ms=self.config.presence.heartbeat_ms, limits=self.limits,
            bucket=TokenBucket(lim.rate_per_second, lim.rate_burst, lim.max_strikes,
                               byte_rate=lim.rate_bytes_per_second,
                               byte_burst=lim.rate_burst_bytes))
        session = Session(ws, machine, lim.send_queue_bytes, self.store.messages)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, ident.exp - time.time()), session.expire)
        self.sessions[session.id] = session
        METRICS.connections.inc()
        addr = address(ws)
        self.conns_by_user[ident.user] += 1
        self.conns_by_address[addr] += 1
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
            _release(self.conns_by_user, ident.user)
            _release(self.conns_by_address, addr)
            server_closed = session.closing
            self._close(session)
            if server_closed:  # a flushing close sends what was queued before it
                await session.drain(CLOSE_GRACE)
            session.stop_writer()
            session.finish_close()

    def _admit(self, user: str, addr: str) -> str | None:
        """Why one more connection of `user` from `addr` is refused, or None."""
        lim = self.config.limits
        if self.conns_by_user[user] >= lim.max_connections_per_user:
            return (f"{lim.max_connections_per_user} connections of this user are open on "
                    "this gateway; close one")
        if addr and self.conns_by_address[addr] >= lim.max_connections_per_address:
            return (f"{lim.max_connections_per_address} connections from this address are "
                    "open on this gateway")
        return None

    async def _open(self, session: Session) -> None:
        """Load the device's cursors and let the machine register and say hello
        (`_resume_all` follows). Whatever was committed between loading the cursors and
        registering is resumed: the heads are compared after the session can receive."""
        convs = await self.store.conversations_of(session.user)
        device = await self.receipts.device_cursors(session.user, session.device)
        if not device.known:
            # a new device starts at the current heads: it gets what is sent from now on
            # (read in batches: one request per conversation of a user in thousands of
            # them would hold this session up, and the store's other users)
            baseline = await self.ingest.heads(convs)
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
        convs = await self.store.conversations_of(session.user)
        heads = await self.ingest.heads(convs)
        fills = 0
        for i, conv in enumerate(convs):
            if i and i % RESUME_SLICE == 0:
                await asyncio.sleep(0)  # a user in 10,000 conversations: others go on
            actions = session.machine.resume(conv, heads[conv])
            if actions:
                session.apply_all(actions)
                fills += 1
                if fills % RESUME_FILLS == 0:
                    await asyncio.sleep(0)

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
                convs = await self.store.conversations_of(session.user)
                heads = await self.ingest.heads(convs)
                for conv in convs:
                    session.apply_all(session.machine.catch_up(conv, heads[conv]))
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
        text = None
        if isinstance(event, Message):
            if self.keyring is not None:
                try:
                    event = self.keyring.open_message(event)
                except SealError as exc:  # only a keyring that lost a key gets here
                    log.error("message %s/%d not delivered: %s", event.conv, event.seq, exc)
                    return
            # a message's one encoding serves every device it goes to
            text = encode(sm.msg_frame(event))
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


def _release(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # a user or address with nothing open costs nothing
