"""A local APNs stand-in speaking HTTP/2 (h2c, prior knowledge, on loopback).

Checks each POST /3/device/<token> as Apple documents it: `authorization: bearer
<JWT>` with alg ES256 verified against the key's public half, `kid` = key id,
`iss` = team id, `iat` less than an hour old; `apns-topic` = the app's topic,
`apns-push-type: alert`, `apns-priority` 5 or 10, `apns-collapse-id` at most 64
bytes; a JSON body of at most 4096 bytes with an `aps` dictionary holding `alert`.
Answers 200 (with apns-id), 410 Unregistered, 429/503 with Retry-After as scripted.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import h2.config
import h2.connection
import h2.events
import jwt

from tests.standins.script import INVALID, OK, TOO_MANY, UNAVAILABLE, Script


class ApnsStandin:
    def __init__(self, public_key_pem: bytes, *, key_id: str = "ABC123DEFG",
                 team_id: str = "DEF123GHIJ", topic: str = "com.example.msgctl") -> None:
        self.public_key = public_key_pem
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.script = Script()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApnsStandin:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        fut.result(10)
        return self

    async def _serve(self) -> None:
        self._server = await self._loop.create_server(lambda: _H2Server(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- one request ---------------------------------------------------------------
    def check(self, headers: dict[str, str], raw: bytes) -> list[tuple[int, str]]:
        """Problems as (status, APNs reason); empty when the request is as documented."""
        out: list[tuple[int, str]] = []
        if headers.get(":method") != "POST":
            out.append((405, "MethodNotAllowed"))
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            out.append((403, "MissingProviderToken"))
        else:
            token = auth[7:]
            try:
                head = jwt.get_unverified_header(token)
                claims = jwt.decode(token, self.public_key, algorithms=["ES256"],
                                    issuer=self.team_id, options={"require": ["iss", "iat"]})
                if head.get("kid") != self.key_id or head.get("alg") != "ES256":
                    out.append((403, "InvalidProviderToken"))
                elif time.time() - claims["iat"] > 3600:
                    out.append((403, "ExpiredProviderToken"))
            except jwt.PyJWTError:
                out.append((403, "InvalidProviderToken"))
        if headers.get("apns-topic") != self.topic:
            out.append((400, "BadTopic" if headers.get("apns-topic") else "MissingTopic"))
        if headers.get("apns-push-type") != "alert":
            out.append((400, "InvalidPushType"))
        if headers.get("apns-priority", "10") not in ("5", "10"):
            out.append((400, "BadPriority"))
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            out.append((400, "BadCollapseId"))
        if len(raw) > 4096:
            out.append((413, "PayloadTooLarge"))
        try:
            body = json.loads(raw)
            aps = body["aps"]
            if not isinstance(aps, dict) or "alert" not in aps:
                raise ValueError
            if "badge" in aps and not isinstance(aps["badge"], int):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            out.append((400, "PayloadEmpty" if not raw else "BadPayload"))
        return out

    def answer(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        path = headers.get(":path", "")
        if not path.startswith("/3/device/"):
            return 404, {}, json.dumps({"reason": "BadPath"}).encode()
        device = path.removeprefix("/3/device/")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        problems = self.check(headers, raw)
        apns_id = str(uuid.uuid4()).upper()
        if problems:
            self.script.violation(f"{device}: {problems}")
            status, reason = problems[0]
            self.script.record(device, status, headers, body)
            return status, {"apns-id": apns_id}, json.dumps({"reason": reason}).encode()
        outcome = self.script.next(device)
        extra = {"apns-id": apns_id}
        if outcome.retry_after is not None:
            extra["retry-after"] = str(int(outcome.retry_after))
        if outcome.kind == OK:
            status, answer = 200, b""
        elif outcome.kind == INVALID:
            status, answer = 410, json.dumps({"reason": "Unregistered",
                                              "timestamp": int(time.time() * 1000)}).encode()
        elif outcome.kind == TOO_MANY:
            status, answer = 429, json.dumps({"reason": "TooManyRequests"}).encode()
        elif outcome.kind == UNAVAILABLE:
            status, answer = 503, json.dumps({"reason": "ServiceUnavailable"}).encode()
        else:
            status, answer = 500, json.dumps({"reason": "InternalServerError"}).encode()
        self.script.record(device, status, headers, body)
        return status, extra, answer


class _H2Server(asyncio.Protocol):
    def __init__(self, standin: ApnsStandin) -> None:
        self.standin = standin
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None:
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except Exception:  # not HTTP/2: hang up, as APNs does
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = ({str(k): str(v) for k, v in ev.headers},
                                              bytearray())
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id][1].extend(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                headers, body = self.streams.pop(ev.stream_id, ({}, bytearray()))
                status, extra, out = self.standin.answer(headers, bytes(body))
                resp = [(":status", str(status)), *extra.items()]
                if out:
                    resp += [("content-type", "application/json"),
                             ("content-length", str(len(out)))]
                self.conn.send_headers(ev.stream_id, resp, end_stream=not out)
                if out:
                    self.conn.send_data(ev.stream_id, out, end_stream=True)
        self._flush()
