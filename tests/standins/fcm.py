"""A local FCM HTTP v1 stand-in (HTTP/1.1) that checks requests as Google documents them.

- POST /token: the OAuth2 JWT-bearer grant (RFC 7523). `grant_type` must be
  urn:ietf:params:oauth:grant-type:jwt-bearer and `assertion` an RS256 JWT signed
  with the service account's key, iss = client_email, aud = this token URI, the
  firebase.messaging scope, exp - iat <= 3600. Answers an access token.
- POST /v1/projects/<project>/messages:send: `Authorization: Bearer <access token>`,
  a JSON body {"message": {"token", "notification"/"data", "android": {...}}} with
  string data values; answers 200 {"name"}, 404 UNREGISTERED, 429/503 + Retry-After
  as scripted (see script.py).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from tests.standins.script import INVALID, OK, TOO_MANY, UNAVAILABLE, Script

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MESSAGE_KEYS = {"name", "token", "topic", "condition", "notification", "data", "android",
                "apns", "webpush", "fcm_options"}
ANDROID_KEYS = {"collapse_key", "priority", "ttl", "restricted_package_name", "data",
                "notification", "fcm_options", "direct_boot_ok"}


def _error(code: int, status: str, message: str, error_code: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if error_code:
        err["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                           "errorCode": error_code}]
    return {"error": err}


def check_message(body: Any) -> list[str]:
    """What is wrong with a messages:send body (empty: as documented)."""
    if not isinstance(body, dict) or set(body) - {"message", "validate_only"}:
        return ["body must be {\"message\": {...}}"]
    m = body.get("message")
    if not isinstance(m, dict):
        return ["'message' must be an object"]
    out = []
    if set(m) - MESSAGE_KEYS:
        out.append(f"unknown message fields {sorted(set(m) - MESSAGE_KEYS)}")
    if not isinstance(m.get("token"), str) or not m["token"]:
        out.append("message.token must be a non-empty string")
    if "notification" not in m and "data" not in m:
        out.append("message needs notification or data")
    n = m.get("notification", {})
    if not isinstance(n, dict) or set(n) - {"title", "body", "image"} or not all(
            isinstance(v, str) for v in n.values()):
        out.append("message.notification: title/body/image strings only")
    d = m.get("data", {})
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in d.items()):
        out.append("message.data values must be strings")
    a = m.get("android")
    if a is not None:
        if not isinstance(a, dict) or set(a) - ANDROID_KEYS:
            out.append("message.android has unknown fields")
        elif not isinstance(a.get("collapse_key", ""), str):
            out.append("android.collapse_key must be a string")
        elif a.get("priority", "normal") not in ("normal", "high", "NORMAL", "HIGH"):
            out.append("android.priority must be normal or high")
        elif not isinstance(a.get("notification", {}).get("notification_count", 0), int):
            out.append("android.notification.notification_count must be an integer")
    return out


class FcmStandin:
    def __init__(self, public_key_pem: bytes, *, project: str = "msgctl-test",
                 client_email: str = "push@msgctl-test.iam.gserviceaccount.com") -> None:
        self.public_key = public_key_pem
        self.project = project
        self.client_email = client_email
        self.script = Script()
        self.access_tokens: set[str] = set()
        self.token_requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def start(self) -> FcmStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the two endpoints -------------------------------------------------------
    def oauth(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return 400, {"error": "invalid_request", "error_description": "form body expected"}
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        if form.get("grant_type") != GRANT:
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(form.get("assertion", ""), self.public_key, algorithms=["RS256"],
                                audience=self.token_uri, issuer=self.client_email,
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
        except jwt.PyJWTError as exc:
            self.script.violation(f"oauth assertion: {exc}")
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if SCOPE not in str(claims["scope"]).split() or claims["exp"] - claims["iat"] > 3600:
            self.script.violation(f"oauth assertion claims: {claims}")
            return 400, {"error": "invalid_scope"}
        token = "ya29." + secrets.token_urlsafe(24)
        self.access_tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def send(self, path: str, headers: dict[str, str],
             raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path != f"/v1/projects/{self.project}/messages:send":
            return 404, _error(404, "NOT_FOUND", f"no such resource {path}"), {}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            self.script.violation(f"send without a valid bearer: {auth[:20]!r}")
            return 401, _error(401, "UNAUTHENTICATED", "invalid credentials"), {}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problems = check_message(body)
        device = body["message"].get("token", "") if not problems else ""
        if problems:
            self.script.violation("; ".join(problems))
            self.script.record(device, 400, headers, body)
            return 400, _error(400, "INVALID_ARGUMENT", "; ".join(problems),
                               "INVALID_ARGUMENT"), {}
        outcome = self.script.next(device)
        extra: dict[str, str] = {}
        if outcome.retry_after is not None:
            extra["Retry-After"] = str(int(outcome.retry_after))
        if outcome.kind == OK:
            status, answer = 200, {"name": f"projects/{self.project}/messages/"
                                           f"0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"}
        elif outcome.kind == INVALID:
            status, answer = 404, _error(404, "NOT_FOUND", "Requested entity was not found.",
                                         "UNREGISTERED")
        elif outcome.kind == TOO_MANY:
            status, answer = 429, _error(429, "RESOURCE_EXHAUSTED", "quota exceeded",
                                         "QUOTA_EXCEEDED")
        elif outcome.kind == UNAVAILABLE:
            status, answer = 503, _error(503, "UNAVAILABLE", "The service is currently "
                                         "unavailable.", "UNAVAILABLE")
        else:
            status, answer = 500, _error(500, "INTERNAL", "internal error", "INTERNAL")
        self.script.record(device, status, headers, body)
        return status, answer, extra

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                extra: dict[str, str] = {}
                if self.path == "/token":
                    status, answer = standin.oauth(headers, raw)
                else:
                    status, answer, extra = standin.send(self.path, headers, raw)
                out = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(out)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)

        return Handler
