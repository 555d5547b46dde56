"""The gateway's HTTP surface on the WebSocket port: the upgrade check, REST, probes.

`websockets` hands every request to `process_request` before the handshake;
it answers `/healthz`, `/readyz`, `/metrics` and the GET-only REST history
itself, and lets `/v1/ws` through to the WebSocket handler once the token is
verified (the identity is left on the connection for the handler).
"""

from __future__ import annotations

import http
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from runtime import auth
from runtime.config import NodeConfig
from runtime.core import frames as f
from runtime.core import paging
from runtime.core.ratelimit import TokenBucket
from runtime.metrics import METRICS
from runtime.ports import ConversationService, MessageStore, Unavailable

REST_USERS = 10_000  # users whose REST rate is remembered (the rest start with a full bucket)


class HttpRoutes:
    """Answers the requests that are not a WebSocket session."""

    def __init__(self, config: NodeConfig, store: MessageStore,
                 conversations: ConversationService, readiness: Callable[[], dict[str, str]],
                 ready: Callable[[], bool],
                 admit: Callable[[str, str], str | None] = lambda user, address: None
                 ) -> None:
        self.config = config
        self.store = store
        self.conversations = conversations
        self.readiness = readiness
        self.ready = ready  # whether the gateway takes sessions (False while stopping)
        # why a new session of (user, address) is refused (a cap on connections), or None
        self.admit = admit
        # REST requests per user; the least recently seen are forgotten
        self._rest_buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    async def process_request(self, conn: ServerConnection,
                              request: Request) -> Response | None:
        """A response for the request, or None to go on with the WebSocket handshake."""
        url = urlsplit(request.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        if path == "/v1/ws":
            try:
                token = _token(request, query)
                if not token:
                    return _json(conn, 401, {"error": "unauthorized",
                                             "message": "missing token"})
                conn.identity = auth.verify(self.config.secret, token)  # type: ignore[attr-defined]
            except auth.AuthError as exc:
                return _json(conn, 401, {"error": "unauthorized", "message": str(exc)})
            if not self.ready():
                return _json(conn, 503, {"error": "unavailable", "message": "not ready"})
            refusal = self.admit(conn.identity.user, address(conn))  # type: ignore[attr-defined]
            if refusal is not None:
                resp = _json(conn, 429, {"error": "too_many_connections", "message": refusal})
                resp.headers["Retry-After"] = "5"
                return resp
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
            return await self.history(conn, request, unquote(parts[3]), query)
        return _json(conn, 404, {"error": "not_found", "message": f"no route for {url.path}"})

    def _rest_bucket(self, user: str) -> TokenBucket:
        bucket = self._rest_buckets.get(user)
        if bucket is None:
            lim = self.config.limits
            bucket = self._rest_buckets[user] = TokenBucket(
                lim.rest_rate_per_second, lim.rest_rate_burst, max_strikes=1 << 30)
            if len(self._rest_buckets) > REST_USERS:
                self._rest_buckets.popitem(last=False)
        else:
            self._rest_buckets.move_to_end(user)
        return bucket

    async def history(self, conn: ServerConnection, request: Request, conv_id: str,
                      query: dict[str, list[str]]) -> Response:
        """GET /v1/conversations/{conv}/messages?after=&limit= (members only)."""
        try:
            token = _token(request, query)
            if not token:
                return _json(conn, 401, {"error": "unauthorized",
                                         "message": "missing bearer token"})
            ident = auth.verify(self.config.secret, token)
        except auth.AuthError as exc:
            return _json(conn, 401, {"error": "unauthorized", "message": str(exc)})
        verdict = self._rest_bucket(ident.user).check(time.monotonic())
        if not verdict.allowed:
            resp = _json(conn, 429, {"error": "rate_limited", "message": "slow down",
                                     "retry_ms": verdict.retry_ms})
            resp.headers["Retry-After"] = str(max(1, -(-verdict.retry_ms // 1000)))
            return resp
        try:
            after = int((query.get("after") or ["0"])[0])
            limit = int((query.get("limit") or [str(f.DEFAULT_SYNC_LIMIT)])[0])
            # a seq is a signed 64-bit integer in every store: a larger one is bad input
            if not 0 <= after <= f.MAX_SEQ or not 1 <= limit <= f.MAX_SYNC_LIMIT:
                raise ValueError
        except ValueError:
            return _json(conn, 400, {"error": "bad_request", "message":
                                     f"after must be 0-{f.MAX_SEQ} and limit "
                                     f"1-{f.MAX_SYNC_LIMIT}"})
        try:
            conv = await self.conversations.get(conv_id)
            if conv is None:
                return _json(conn, 404, {"error": "not_found", "message": "no such conversation"})
            if ident.user not in conv.members:
                return _json(conn, 403, {"error": "forbidden", "message": "not a member"})
            msgs = await self.store.messages(conv_id, after, limit + 1)
        except Unavailable as exc:  # the store is restarting or cut off: the client retries
            resp = _json(conn, 503, {"error": "unavailable",
                                     "message": f"temporarily unavailable; retry ({exc})"})
            resp.headers["Retry-After"] = "1"
            return resp
        budget = paging.budget(self.config.limits.send_queue_bytes)
        wire, more = paging.page(msgs, limit, budget)
        return _json(conn, 200, {"msgs": wire, "more": more})


def address(conn: ServerConnection) -> str:
    """The client's IP address ("" when the transport has none)."""
    peer = conn.remote_address
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def bearer(headers: Headers) -> str | None:
    """The token of the Authorization header; `AuthError` when there are several (which
    one a proxy meant is unknown; `Headers.get` would raise, a 500)."""
    values = headers.get_all("Authorization")
    if len(values) > 1:
        raise auth.AuthError("more than one Authorization header")
    value = values[0] if values else ""
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return None


def _token(request: Request, query: dict[str, list[str]]) -> str | None:
    """The bearer token, or a `token` query parameter (browsers cannot set headers on a
    WebSocket); `AuthError` for several Authorization headers."""
    return bearer(request.headers) or (query.get("token") or [""])[0] or None


def _set_type(resp: Response, content_type: str) -> None:
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = content_type


def _json(conn: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    resp = conn.respond(http.HTTPStatus(status), json.dumps(body))
    _set_type(resp, "application/json")
    return resp
