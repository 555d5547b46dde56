"""Gateway runtime: WebSocket protocol v1 plus the GET-only REST surface on one port.

A thin asyncio shell: frames are parsed by `runtime.core.frames`, ordering is
decided by `runtime.core.delivery`, rate limits by `runtime.core.ratelimit`;
this module moves bytes and calls the other runtimes through their APIs.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from runtime import auth
from runtime.config import NodeConfig
from runtime.core import frames as f
from runtime.core import media as media_rules
from runtime.core.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    FORBIDDEN,
    INTERNAL,
    NOT_FOUND,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
)
from runtime.core.ratelimit import TokenBucket
from runtime.gateway.session import CLOSE_GRACE, Session, encode, msg_frame
from runtime.media.service import MediaService, client_host
from runtime.metrics import METRICS, labelled
from runtime.ports import (
    Conversation,
    Event,
    EventLog,
    Message,
    MessageStore,
    PushToken,
    Receipt,
    SessionDirectory,
    StateStore,
    TypingEvent,
)
from runtime.presence import PresenceService, presence_frame
from runtime.sequencer import Conversations, Ingest, Receipts, Unavailable

log = logging.getLogger("msgctl.gateway")

SUBPROTOCOL = "msgctl.v1"
REGISTER_WAIT_S = 2.0  # longest a hello waits for the session directory (Redis away)
OPEN_WAIT_S = 10.0  # longest a new session waits for an engine that is away


class Gateway:
    def __init__(self, config: NodeConfig, *, store: MessageStore, state: StateStore,
                 conversations: Conversations, ingest: Ingest, receipts: Receipts,
                 event_log: EventLog, directory: SessionDirectory, presence: PresenceService,
                 readiness: Callable[[], dict[str, str]],
                 media: MediaService | None = None) -> None:
        self.config = config
        self.media = media  # None: `upload` is answered `unavailable`
        self.store = store
        self.state = state
        self.conversations = conversations
        self.ingest = ingest
        self.receipts = receipts
        self.log = event_log
        self.directory = directory
        self.presence = presence
        self.readiness = readiness
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
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
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
                    METRICS.closes.labels("keepalive_timeout").inc()
                    session.close(CLOSE_INTERNAL, "keepalive ping timeout")
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

    # -- HTTP -------------------------------------------------------------
    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        if path == "/v1/ws":
            token = _bearer(request.headers) or (query.get("token") or [None])[0]
            if not token:
                return _json(conn, 401, {"error": "unauthorized", "message": "missing token"})
            try:
                conn.identity = auth.verify(self.config.secret, token)  # type: ignore[attr-defined]
            except auth.AuthError as exc:
                return _json(conn, 401, {"error": "unauthorized", "message": str(exc)})
            if not self.ready:
                return _json(conn, 503, {"error": "unavailable", "message": "not ready"})
            return None
        if path == "/healthz":
            return _json(conn, 200, {"status": "ok", "region": self.config.region})
        if path == "/readyz":
            runtimes = self.readiness()
            ready = all(v == "ready" for v in runtimes.values())
            return _json(conn, 200 if ready else 503,
                         {"ready": ready, "region": self.config.region, "runtimes": runtimes})
        if path == "/metrics":
            resp = conn.respond(200, METRICS.render().decode())
            _set_type(resp, "text/plain; version=0.0.4; charset=utf-8")
            return resp
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "v1", "conversations"] and parts[4] == "messages":
            return await self._rest_history(conn, request, unquote(parts[3]), query)
        return _json(conn, 404, {"error": "not_found", "message": f"no route for {url.path}"})

    async def _rest_history(self, conn: ServerConnection, request: Request, conv_id: str,
                            query: dict[str, list[str]]) -> Response:
        token = _bearer(request.headers) or (query.get("token") or [None])[0]
        if not token:
            return _json(conn, 401, {"error": "unauthorized", "message": "missing bearer token"})
        try:
            ident = auth.verify(self.config.secret, token)
        except auth.AuthError as exc:
            return _json(conn, 401, {"error": "unauthorized", "message": str(exc)})
        try:
            after = int((query.get("after") or ["0"])[0])
            limit = int((query.get("limit") or [str(f.DEFAULT_SYNC_LIMIT)])[0])
            if after < 0 or not 1 <= limit <= f.MAX_SYNC_LIMIT:
                raise ValueError
        except ValueError:
            return _json(conn, 400, {"error": "bad_request", "message":
                                     f"after must be >= 0 and limit 1-{f.MAX_SYNC_LIMIT}"})
        conv = await self.conversations.get(conv_id)
        if conv is None:
            return _json(conn, 404, {"error": "not_found", "message": "no such conversation"})
        if ident.user not in conv.members:
            return _json(conn, 403, {"error": "forbidden", "message": "not a member"})
        msgs = await self.store.messages(conv_id, after, limit + 1)
        return _json(conn, 200, {"msgs": [m.to_wire() for m in msgs[:limit]],
                                 "more": len(msgs) > limit})

    # -- WebSocket --------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        ident: auth.Identity = ws.identity  # type: ignore[attr-defined]
        lim = self.config.limits
        session = Session(ws, ident.user, ident.device, uuid.uuid4().hex[:16],
                          lim.send_queue_bytes, self.store.messages)
        bucket = TokenBucket(lim.rate_per_second, lim.rate_burst, lim.max_strikes)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, ident.exp - time.time()), self._expire, session)
        self.sessions[session.id] = session
        METRICS.connections.inc()
        try:
            hello = {"t": "hello", "user": ident.user, "device": ident.device,
                     "region": self.config.region, "session": session.id,
                     "heartbeat_ms": self.config.presence.heartbeat_ms}
            if await self._patiently(session, lambda: self._open(session, hello)):
                await self._patiently(session, lambda: self._resume_all(session))
            async for data in ws:
                if session.closing:
                    # keep reading, and discarding, so the peer's close frame is seen
                    continue
                verdict = bucket.check(time.monotonic())
                if not verdict.allowed:
                    if verdict.close:
                        METRICS.closes.labels("rate_limit").inc()
                        session.close(CLOSE_POLICY, "rate limit exceeded", flush=True)
                        continue
                    self._error(session, RATE_LIMITED, "slow down", _peek_id(data),
                                retry_ms=verdict.retry_ms)
                    continue
                self.presence.heartbeat(session.user, session.id)
                frame = f.parse_client_frame(data, self.limits)
                if isinstance(frame, f.FrameError):
                    fid = frame.id if frame.id is not None else _peek_id(data)
                    self._error(session, frame.code, frame.message, fid)
                    continue
                labelled(METRICS.frames_in, type(frame).__name__.lower()).inc()
                try:
                    await self._dispatch(session, frame)
                except Unavailable as exc:  # an engine is away: the client retries
                    log.warning("frame %r from %s: %s", frame, session.user, exc)
                    self._error(session, UNAVAILABLE, "temporarily unavailable; retry",
                                frame.id)
                except Exception:
                    log.exception("frame %r from %s failed", frame, session.user)
                    self._error(session, INTERNAL, "internal error", frame.id)
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

    async def _open(self, session: Session, hello: dict[str, Any]) -> None:
        """Load the device's cursors, register the session and say hello (`_resume_all`
        follows).

        The cursors are known before the session can receive a live message, and the
        heads are compared after it can: whatever was committed in between is resumed.
        `hello` waits for the registration to reach the directory, so a client that has
        it gets everything routed from then on, ephemeral events (typing) included.
        """
        convs = await self.store.conversations_of(session.user)
        device = await self.receipts.device_cursors(session.user, session.device)
        if not device.known:
            # a new device starts at the current heads: it gets what is sent from now on
            baseline = {c: await self.ingest.head(c) for c in convs}
            await self.state.register_device(session.user, session.device, baseline)
            device.cursors = baseline
        session.cursors = device.cursors
        self.directory.register(session.user, session.device, session.id, self.config.gateway_id)
        self.by_user[session.user].add(session.id)
        self.presence.connect(session.user, session.id)
        if not await self.directory.settle(REGISTER_WAIT_S):
            log.warning("session %s not in the directory after %.0fs; saying hello anyway",
                        session.id, REGISTER_WAIT_S)
        session.enqueue(hello)

    async def _resume_all(self, session: Session) -> None:
        for conv in await self.store.conversations_of(session.user):
            if await self.ingest.head(conv) > session.cursors.get(conv, 0):
                session.resume(conv)  # idempotent: a retry does not fill twice

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
                    if await self.ingest.head(conv) > session.stream(conv).last:
                        session.resume(conv)
            except Exception as exc:  # the next reconnect or message tries again
                log.warning("catch-up of session %s failed: %s", session.id, exc)

    def _close(self, session: Session) -> None:
        session.closing = True
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

    def _expire(self, session: Session) -> None:
        self._error(session, UNAUTHORIZED, "token expired; reconnect with a fresh token", None)
        METRICS.closes.labels("token_expired").inc()
        session.close(CLOSE_POLICY, "token expired", flush=True)

    def _error(self, session: Session, code: str, message: str, fid: str | None,
               **extra: Any) -> None:
        labelled(METRICS.errors, code).inc()
        frame: dict[str, Any] = {"t": "error", "code": code, "message": message, **extra}
        if fid is not None:
            frame["id"] = fid
        session.enqueue(frame)

    def _reply(self, session: Session, frame: dict[str, Any], fid: str | None) -> None:
        if fid is not None:
            frame["id"] = fid
        session.enqueue(frame)

    async def _member_conv(self, session: Session, conv_id: str,
                           fid: str | None) -> Conversation | None:
        conv = await self.conversations.get(conv_id)
        if conv is None:
            self._error(session, NOT_FOUND, f"no conversation '{conv_id}'", fid)
            return None
        if session.user not in conv.members:
            self._error(session, FORBIDDEN, f"not a member of '{conv_id}'", fid)
            return None
        return conv

    async def _dispatch(self, s: Session, frame: f.ClientFrame) -> None:
        match frame:
            case f.Send():
                await self._send(s, frame)
            case f.Ack():
                if await self._member_conv(s, frame.conv, frame.id):
                    await self.receipts.ack(s.user, s.device, frame.conv, frame.seq)
            case f.Read():
                if await self._member_conv(s, frame.conv, frame.id):
                    await self.receipts.read(s.user, s.device, frame.conv, frame.seq)
            case f.Ping():
                self._reply(s, {"t": "pong"}, frame.id)
            case f.Sync(conv=None):
                await self._sync_all(s, frame)
            case f.Sync():
                await self._sync(s, frame)
            case f.Create():
                await self._create(s, frame)
            case f.Watch():
                for state in await self.presence.watch(s.id, frame.users):
                    self._reply(s, presence_frame(state), frame.id)
            case f.Typing():
                if await self._member_conv(s, frame.conv, frame.id):
                    self.log.publish(TypingEvent(frame.conv, s.user))
            case f.PushRegister():
                await self.state.set_push_token(PushToken(s.user, s.device, frame.platform,
                                                          frame.token))
                self._reply(s, {"t": "ok"}, frame.id)
            case f.Upload():
                self._upload(s, frame)

    def _host(self, s: Session) -> str:
        request = s.ws.request
        return client_host(request.headers.get("Host") if request is not None else None,
                           self.config.host)

    def _upload(self, s: Session, frame: f.Upload) -> None:
        if self.media is None:
            self._error(s, UNAVAILABLE, "media uploads are not configured on this deployment",
                        frame.id)
            return
        slot = self.media.slot(s.user, frame.kind, frame.content_type, frame.size,
                               self._host(s))
        if isinstance(slot, media_rules.Refusal):
            self._error(s, slot.code, slot.message, frame.id)
            return
        self._reply(s, slot, frame.id)

    async def _send(self, s: Session, frame: f.Send) -> None:
        if not await self._member_conv(s, frame.conv, frame.id):
            return
        media = frame.media
        if media is not None:
            if self.media is None:
                self._error(s, UNAVAILABLE, "media is not configured on this deployment",
                            frame.id)
                return
            # the URL goes to every recipient: built from the region's own address (or the
            # topology's public_url), never from a header the sender chose
            checked = await self.media.attach(s.user, frame.kind, media, self.config.host)
            if isinstance(checked, media_rules.Refusal):
                self._error(s, checked.code, checked.message, frame.id)
                return
            media = checked
        if s.inflight is None:
            s.inflight = asyncio.Semaphore(self.config.limits.inflight_sends)
        inflight = s.inflight
        await inflight.acquire()  # back-pressure: stop reading this socket while it is full
        t0 = time.perf_counter()
        fut = self.ingest.submit(frame.conv, frame.cid, s.user, s.device, frame.kind, frame.body,
                                 media)

        def reply(done: asyncio.Future[Message]) -> None:
            # a callback, not a task per send: the hot path stays cheap
            inflight.release()
            if done.cancelled():
                self._error(s, UNAVAILABLE, "not stored, retry with the same cid", frame.id)
                return
            exc = done.exception()
            if exc is None:
                msg = done.result()
                METRICS.send_seconds.observe(time.perf_counter() - t0)
                self._reply(s, {"t": "sent", "conv": msg.conv, "cid": msg.cid, "seq": msg.seq,
                                "prev": msg.prev, "ts": msg.ts}, frame.id)
            elif isinstance(exc, Unavailable):
                self._error(s, UNAVAILABLE, f"not stored, retry with the same cid: {exc}",
                            frame.id)
            else:
                log.error("send %s/%s failed: %r", frame.conv, frame.cid, exc)
                self._error(s, INTERNAL, "internal error; retry with the same cid", frame.id)
        fut.add_done_callback(reply)

    async def _sync(self, s: Session, frame: f.Sync) -> None:
        assert frame.conv is not None
        if not await self._member_conv(s, frame.conv, frame.id):
            return
        msgs = await self.store.messages(frame.conv, frame.after, frame.limit + 1)
        self._reply(s, {"t": "batch", "conv": frame.conv,
                        "msgs": [m.to_wire() for m in msgs[:frame.limit]],
                        "more": len(msgs) > frame.limit}, frame.id)

    async def _sync_all(self, s: Session, frame: f.Sync) -> None:
        device = await self.receipts.device_cursors(s.user, s.device)
        for conv in await self.store.conversations_of(s.user):
            after = device.cursors.get(conv, 0)
            msgs = await self.store.messages(conv, after, frame.limit + 1)
            if msgs:
                self._reply(s, {"t": "batch", "conv": conv,
                                "msgs": [m.to_wire() for m in msgs[:frame.limit]],
                                "more": len(msgs) > frame.limit}, frame.id)
        self._reply(s, {"t": "synced"}, frame.id)

    async def _create(self, s: Session, frame: f.Create) -> None:
        members = tuple(sorted({*frame.members, s.user}))
        conv_id = frame.conv or uuid.uuid4().hex
        wanted = Conversation(conv_id, members, self.config.region, frame.title,
                              int(time.time() * 1000))
        conv = await self.conversations.create(wanted)
        if set(conv.members) != set(members):
            self._error(s, FORBIDDEN, f"conversation '{conv_id}' exists with other members",
                        frame.id)
            return
        out: dict[str, Any] = {"t": "created", "conv": conv.conv, "members": list(conv.members),
                               "home": conv.home}
        if conv.title is not None:
            out["title"] = conv.title
        self._reply(s, out, frame.id)

    # -- events from the router and presence -------------------------------
    def deliver(self, event: Event, users: list[str]) -> None:
        text = encode(msg_frame(event)) if isinstance(event, Message) else None
        for user in users:
            for sid in list(self.by_user.get(user, ())):
                session = self.sessions.get(sid)
                if session is None:
                    continue
                if isinstance(event, Message):
                    session.offer(event, text)
                elif isinstance(event, Receipt):
                    if session.user != event.user:
                        session.enqueue({"t": "receipt", "conv": event.conv, "user": event.user,
                                         "kind": event.kind, "seq": event.seq})
                    elif event.kind == "read" and session.device != event.device:
                        session.enqueue({"t": "read_sync", "conv": event.conv,
                                         "seq": event.seq})
                elif isinstance(event, TypingEvent):
                    session.enqueue({"t": "typing", "conv": event.conv, "user": event.user})

    def notify_presence(self, watchers: frozenset[str], state: Any) -> None:
        frame = presence_frame(state)
        for sid in watchers:
            session = self.sessions.get(sid)
            if session is not None:
                session.enqueue(dict(frame))


def _select_subprotocol(conn: ServerConnection, offered: Any) -> Any:
    # browsers and simple clients may offer none; the protocol is still v1
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return None


def _set_type(resp: Response, content_type: str) -> None:
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = content_type


def _json(conn: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    resp = conn.respond(http.HTTPStatus(status), json.dumps(body))
    _set_type(resp, "application/json")
    return resp


def _peek_id(data: str | bytes) -> str | None:
    """The `id` of a refused frame, so the client can tell which one to retry."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError, TypeError):
        return None
    fid = obj.get("id") if isinstance(obj, dict) else None
    return fid if isinstance(fid, str) and len(fid) <= f.MAX_ID_LEN else None


__all__ = ["Gateway", "SUBPROTOCOL", "encode"]
