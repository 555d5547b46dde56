"""Local stand-ins for the push providers (FCM HTTP v1, APNs HTTP/2) used by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.standins.apns import ApnsStandin
from tests.standins.fcm import FcmStandin
from tests.standins.keys import ec_pems, rsa_pems, write_service_account
from tests.standins.script import INVALID, OK, TOO_MANY, UNAVAILABLE, Outcome

__all__ = ["INVALID", "OK", "TOO_MANY", "UNAVAILABLE", "ApnsStandin", "FcmStandin", "Outcome",
           "Standins"]


@dataclass
class Standins:
    fcm: FcmStandin
    apns: ApnsStandin
    service_account: Path
    apns_key: Path

    @classmethod
    def start(cls, directory: Path) -> Standins:
        directory.mkdir(parents=True, exist_ok=True)
        rsa_private, rsa_public = rsa_pems()
        ec_private, ec_public = ec_pems()
        fcm = FcmStandin(rsa_public).start()
        apns = ApnsStandin(ec_public).start()
        sa = write_service_account(directory / "service-account.json", rsa_private,
                                   project=fcm.project, client_email=fcm.client_email,
                                   token_uri=fcm.token_uri)
        key = directory / f"AuthKey_{apns.key_id}.p8"
        key.write_bytes(ec_private)
        key.chmod(0o600)
        return cls(fcm, apns, sa, key)

    def push_section(self, **extra: Any) -> dict[str, Any]:
        """The topology's `push:` section pointing at these stand-ins."""
        return {"fcm": {"service_account": str(self.service_account),
                        "base_url": self.fcm.base_url},
                "apns": {"key_file": str(self.apns_key), "key_id": self.apns.key_id,
                         "team_id": self.apns.team_id, "topic": self.apns.topic,
                         "host": self.apns.host},
                **extra}

    def stop(self) -> None:
        self.fcm.stop()
        self.apns.stop()
