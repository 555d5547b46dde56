"""What a push provider's answer means to the push runtime."""

from __future__ import annotations

import email.utils
import time


class PushError(Exception):
    """A provider refused or failed a notification.

    `invalid_token`: the token is dead (FCM UNREGISTERED / 404, APNs 410); drop it.
    `retryable`: try again later (429, 5xx, network), after `retry_after` seconds if the
    provider said so.
    """

    def __init__(self, reason: str, *, status: int = 0, retryable: bool = False,
                 invalid_token: bool = False, retry_after: float | None = None,
                 answer: object = None) -> None:
        super().__init__(f"{status} {reason}" if status else reason)
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.invalid_token = invalid_token
        self.retry_after = retry_after
        self.answer = answer


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
