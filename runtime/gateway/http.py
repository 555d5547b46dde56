"""The gateway's HTTP surface on the WebSocket port: the upgrade check, REST, probes.

`websockets` hands every request to `process_request` before the handshake;
it answers `/healthz`, `/readyz`, `/metrics` and the GET-only REST history
itself, and lets `/v1/ws` through to the WebSocket handler once the token is
verified (the identity is left on the connection for the handler).
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from runtime import auth
from runtime.config import NodeConfig
from runtime.core import frames as f
from runtime.metrics import METRICS
from runtime.ports import ConversationService, MessageStore

SUBPROTOCOL = "msgctl.v1"


class HttpRoutes:
    """Answers the requests that are not a WebSocket session."""

    def __init__(self, config: NodeConfig, store: MessageStore,
                 conversations: ConversationService, readiness: Callable[[], dict[str, str]],
                 ready: Callable[[], bool]) -> None:
        self.config = config
        self.store = store
        self.conversations = conversations
        self.readiness = readiness
        self.ready = ready  # whether the gateway takes sessions (False while stopping)

    async def process_request(self, conn: ServerConnection,
                              request: Request) -> Response | None:
        """A response for the request, or None to go on with the WebSocket handshake."""
        url = urlsplit(request.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        if path == "/v1/ws":
            token = _token(request, query)
            if not token:
                return _json(conn, 401, {"error": "unauthorized", "message": "missing token"})
            try:
                conn.identity = auth.verify(self.config.secret, token)  # type: ignore[attr-defined]
            except auth.AuthError as exc:
                return _json(conn, 401, {"error": "unauthorized", "message": str(exc)})
            if not self.ready():
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
            return await self.history(conn, request, unquote(parts[3]), query)
        return _json(conn, 404, {"error": "not_found", "message": f"no route for {url.path}"})

    async def history(self, conn: ServerConnection, request: Request, conv_id: str,
                      query: dict[str, list[str]]) -> Response:
        """GET /v1/conversations/{conv}/messages?after=&limit= (members only)."""
        token = _token(request, query)
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


def select_subprotocol(conn: ServerConnection, offered: Any) -> Any:
    # browsers and simple clients may offer none; the protocol is still v1
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return None


def _token(request: Request, query: dict[str, list[str]]) -> str | None:
    """The bearer token, or a `token` query parameter (browsers cannot set headers on a
    WebSocket)."""
    return bearer(request.headers) or (query.get("token") or [""])[0] or None


def _set_type(resp: Response, content_type: str) -> None:
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = content_type


def _json(conn: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    resp = conn.respond(http.HTTPStatus(status), json.dumps(body))
    _set_type(resp, "application/json")
    return resp
