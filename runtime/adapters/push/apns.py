"""Apple Push Notification service over HTTP/2 with a token-based (ES256) provider JWT.

The provider token (kid = key id, iss = team id, iat) is signed with the .p8 key and
reused until it is 50 minutes old (APNs refuses tokens older than 60 minutes and
ones refreshed more often than every 20).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from runtime.adapters.push.errors import PushError, parse_retry_after
from runtime.adapters.push.payload import collapse_id, shorten
from runtime.ports import PushToken

DEFAULT_HOST = "https://api.push.apple.com"
TOKEN_REFRESH_S = 50 * 60
INVALID_REASONS = {"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"}


class ApnsProvider:
    platform = "apns"

    def __init__(self, key_pem: str | bytes, *, key_id: str, team_id: str, topic: str,
                 host: str = DEFAULT_HOST, timeout: float = 10.0) -> None:
        for name, value in (("key_id", key_id), ("team_id", team_id), ("topic", topic)):
            if not value:
                raise ValueError(f"apns: '{name}' is missing")
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.host = host.rstrip("/")
        self._key = key_pem
        # http:// means h2c with prior knowledge (local stand-ins); https:// negotiates h2 (ALPN)
        self._client = httpx.AsyncClient(http2=True, http1=False, timeout=timeout)
        self._jwt: str | None = None
        self._jwt_iat = 0.0

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> ApnsProvider:
        return cls(Path(path).read_bytes(), **kwargs)

    def describe(self) -> str:
        return f"apns {self.host} topic {self.topic}"

    async def aclose(self) -> None:
        await self._client.aclose()

    def provider_token(self) -> str:
        now = time.time()
        if self._jwt is None or now - self._jwt_iat >= TOKEN_REFRESH_S:
            self._jwt = jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key,
                                   algorithm="ES256", headers={"kid": self.key_id})
            self._jwt_iat = now
        return self._jwt

    @staticmethod
    def body(payload: dict[str, Any]) -> dict[str, Any]:
        alert: dict[str, str] = {"title": str(payload.get("title") or
                                              f"New message from {payload.get('from')}")}
        if payload.get("body") is not None:
            alert["body"] = shorten(str(payload["body"]))  # APNs refuses payloads over 4 KB
        aps: dict[str, Any] = {"alert": alert, "sound": "default",
                               "thread-id": str(payload.get("conv", ""))}
        if isinstance(payload.get("badge"), int):
            aps["badge"] = payload["badge"]
        extra = {k: v for k, v in payload.items()
                 if k not in ("body", "badge", "collapse_key", "title")}
        return {"aps": aps, **extra}

    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.topic, "apns-push-type": "alert", "apns-priority": "10",
            "apns-collapse-id": collapse_id(str(payload.get("collapse_key",
                                                            payload.get("conv", "")))),
        }
        try:
            resp = await self._client.post(f"{self.host}/3/device/{token.token}",
                                           json=self.body(payload), headers=headers)
        except httpx.HTTPError as exc:
            # the device token is in the URL, which an error may quote; the reason goes
            # to the log and the dead-letter file
            reason = f"{type(exc).__name__}: {exc}".replace(token.token, "<device token>")
            raise PushError(reason, retryable=True) from None
        if resp.status_code == 200:
            return {"status": 200, "apns_id": resp.headers.get("apns-id")}
        try:
            answer: Any = resp.json()
        except ValueError:
            answer = {"reason": resp.text[:200]}
        reason = str(answer.get("reason") if isinstance(answer, dict) else "") or \
            f"http {resp.status_code}"
        if resp.status_code == 410 or reason in INVALID_REASONS:
            raise PushError(reason, status=resp.status_code, invalid_token=True, answer=answer)
        if reason == "ExpiredProviderToken":
            self._jwt = None
        retry = resp.status_code == 429 or resp.status_code >= 500 or \
            reason == "ExpiredProviderToken"
        raise PushError(reason, status=resp.status_code, retryable=retry, answer=answer,
                        retry_after=parse_retry_after(resp.headers.get("retry-after")))
