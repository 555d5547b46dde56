"""Push providers behind the PushProvider port: FCM HTTP v1, APNs (HTTP/2), the log sink.

`build_provider` turns the node's `push` config into one provider that routes each
token by its platform; a platform without credentials goes to the log sink.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from runtime.adapters.embedded.push_sink import LogSinkProvider
from runtime.adapters.push.apns import ApnsProvider
from runtime.adapters.push.errors import PushError
from runtime.adapters.push.fcm import FcmProvider
from runtime.config import PushConfig
from runtime.ports import PushProvider, PushToken

log = logging.getLogger("msgctl.push")

__all__ = ["ApnsProvider", "FcmProvider", "PlatformRouter", "PushError", "build_provider"]


class PlatformRouter:
    """Sends each token through its platform's provider, else through the fallback."""

    def __init__(self, providers: dict[str, PushProvider], fallback: PushProvider) -> None:
        self.providers = providers
        self.fallback = fallback

    def provider_for(self, platform: str) -> PushProvider:
        return self.providers.get(platform, self.fallback)

    async def send(self, token: PushToken, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.provider_for(token.platform).send(token, payload)

    def describe(self) -> str:
        parts = [p.describe() for p in self.providers.values()]
        if set(self.providers) != {"fcm", "apns"}:
            parts.append(self.fallback.describe())
        return "; ".join(parts)

    async def warm_up(self) -> None:
        """Fetch the FCM access token before the first notification needs it."""
        fcm = self.providers.get("fcm")
        if isinstance(fcm, FcmProvider):
            try:
                await fcm.access_token()
            except Exception as exc:  # the first notification retries it
                log.warning("push: FCM access token not fetched yet: %s", exc)

    async def aclose(self) -> None:
        for p in self.providers.values():
            close = getattr(p, "aclose", None)
            if close is not None:
                await close()


def build_provider(config: PushConfig, data_dir: Path, region: str) -> PlatformRouter:
    """The providers the config names; raises ValueError/OSError on unusable credentials."""
    providers: dict[str, PushProvider] = {}
    if config.fcm.service_account:
        providers["fcm"] = FcmProvider.from_file(
            Path(config.fcm.service_account), base_url=config.fcm.base_url,
            token_uri=config.fcm.token_uri, timeout=config.timeout_s)
    a = config.apns
    if a.key_file:
        providers["apns"] = ApnsProvider.from_file(
            Path(a.key_file), key_id=a.key_id, team_id=a.team_id, topic=a.topic, host=a.host,
            timeout=config.timeout_s)
    return PlatformRouter(providers, LogSinkProvider(Path(data_dir) / f"push-{region}.jsonl"))
