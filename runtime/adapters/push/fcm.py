"""Firebase Cloud Messaging, HTTP v1 API, authorised with a service account (OAuth2).

The access token comes from the JWT-bearer grant (RFC 7523): an RS256 assertion
signed with the service account's private key, exchanged at its token URI, and
cached until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from runtime.adapters.push.errors import PushError, parse_retry_after
from runtime.adapters.push.payload import shorten
from runtime.ports import PushToken

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"



class FcmProvider:
    platform = "fcm"

    def __init__(self, service_account: dict[str, Any], *, base_url: str = DEFAULT_BASE_URL,
                 token_uri: str = "", timeout: float = 10.0) -> None:
        for key in ("project_id", "client_email", "private_key"):
            if not service_account.get(key):
                raise ValueError(f"service account: '{key}' is missing")
        self.project = service_account["project_id"]
        self.client_email = service_account["client_email"]
        self.key_id = service_account.get("private_key_id")
        self._key = service_account["private_key"]
        self.token_uri = token_uri or service_account.get("token_uri") or \
            "https://oauth2.googleapis.com/token"
        self.send_url = f"{base_url.rstrip('/')}/v1/projects/{self.project}/messages:send"
        # HTTP/2 when the server offers it (ALPN on https), HTTP/1.1 otherwise
        self._client = httpx.AsyncClient(http2=True, timeout=timeout)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> FcmProvider:
        return cls(json.loads(Path(path).read_text()), **kwargs)

    def describe(self) -> str:
        return f"fcm {self.send_url}"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def access_token(self) -> str:
        async with self._lock:
            if self._token and time.time() < self._token_expiry - 60:
                return self._token
            now = int(time.time())
            headers = {"kid": self.key_id} if self.key_id else None
            assertion = jwt.encode({"iss": self.client_email, "scope": SCOPE,
                                    "aud": self.token_uri, "iat": now, "exp": now + 3600},
                                   self._key, algorithm="RS256", headers=headers)
            try:
                resp = await self._client.post(self.token_uri, data={
                    "grant_type": GRANT_TYPE, "assertion": assertion})
            except httpx.HTTPError as exc:
                raise PushError(f"oauth token: {type(exc).__name__}: {exc}",
                                retryable=True) from exc
            if resp.status_code != 200:
                retry = resp.status_code == 429 or resp.status_code >= 500
                raise PushError(f"oauth token refused: {resp.text[:200]}",
                                status=resp.status_code, retryable=retry,
                                retry_after=parse_retry_after(resp.headers.get("retry-after")))
            body = resp.json()
            self._token = body["access_token"]
            self._token_expiry = time.time() + float(body.get("expires_in", 3600))
            return self._token

    def message(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        conv = str(payload.get("conv", ""))
        # the body goes once, shortened: FCM refuses messages over 4 KB
        data = {k: str(v) for k, v in payload.items()
                if k not in ("collapse_key", "body") and v is not None}
        notification: dict[str, str] = {"title": str(payload.get("title") or
                                                     f"New message from {payload.get('from')}")}
        if payload.get("body") is not None:
            notification["body"] = shorten(str(payload["body"]))
        android: dict[str, Any] = {"collapse_key": str(payload.get("collapse_key", conv)),
                                   "priority": "high",
                                   "notification": {"tag": conv}}
        if isinstance(payload.get("badge"), int):
            android["notification"]["notification_count"] = payload["badge"]
        return {"message": {"token": token.token, "notification": notification, "data": data,
                            "android": android}}

    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        bearer = await self.access_token()
        try:
            resp = await self._client.post(self.send_url, json=self.message(token, payload),
                                           headers={"Authorization": f"Bearer {bearer}"})
        except httpx.HTTPError as exc:
            raise PushError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        try:
            answer: Any = resp.json()
        except ValueError:
            answer = resp.text[:200]
        if resp.status_code == 200:
            return {"status": 200, "name": answer.get("name") if isinstance(answer, dict)
                    else None}
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        codes = [d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)]
        reason = (codes[0] if codes and codes[0] else error.get("status")) or \
            f"http {resp.status_code}"
        if resp.status_code == 401:
            self._token = None  # a fresh access token next time
        # only the documented code: a 404 from a wrong project path or a proxy must not
        # wipe every token
        if "UNREGISTERED" in codes:
            raise PushError("UNREGISTERED", status=resp.status_code, invalid_token=True,
                            answer=answer)
        retry = resp.status_code in (401, 429) or resp.status_code >= 500
        raise PushError(str(reason), status=resp.status_code, retryable=retry, answer=answer,
                        retry_after=parse_retry_after(resp.headers.get("retry-after")))
