"""Secrets out of the logs: redaction of tokens and bodies in every record a node writes.

The runtimes never log a message body, a JWT or a push token on purpose: the records
that carry them (`runtime.ports`, the frames and the session machine's actions) leave
them out of their repr, which is what a ``%r`` in a log call prints. `RedactFilter` is
the net under that rule, for text the runtimes do not write themselves: websockets
logs each request line and header at DEBUG (``GET /v1/ws?token=<JWT>``,
``Authorization: Bearer <JWT>``), an exception's message may quote a URL with its
``?token=`` or signature, a traceback may quote a frame. Every handler of a node
carries the filter, so whatever reaches a log file or stderr has been through it.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# names whose value is a secret (a JWT, a push token, a signed URL's signature, ...) or a
# message body, as they appear in query strings, form fields, JSON and dataclass reprs
_NAMES = r"[A-Za-z_]*(?:token|signature|secret|password|credential)|body"
_QUOTED = r"(['\"])(?:\\.|(?!\2).)*\2"  # a quoted string, escapes included, either quote
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # "token": "...", 'body': '...' (JSON, dict reprs), token='...' (dataclass reprs)
    (re.compile(rf"(?i)(['\"]?\b(?:{_NAMES})['\"]?\s*[:=]\s*){_QUOTED}"), rf"\1'{REDACTED}'"),
    # ?token=... &signature=... (URLs, form bodies): the value up to the next separator
    (re.compile(rf"(?i)(\b(?:{_NAMES})=)[^&\s'\"<>#;,)]+"), rf"\1{REDACTED}"),
    # an Authorization header, whatever its scheme
    (re.compile(r"(?i)(\bauthorization\s*:\s*)[^\r\n'\"]+"), rf"\1{REDACTED}"),
    # a bearer credential anywhere else (8+ characters: "bearer token" is prose)
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=:-]{8,}"), rf"\1{REDACTED}"),
    # a JWT anywhere: base64url header (always '{"...' = "eyJ"), payload and signature
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
]


def redact(text: str) -> str:
    """`text` with every token, signature, bearer credential, JWT and body value replaced."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """A handler filter that redacts a record's message, traceback and stack in place.

    On the handler, not the logger: a logger's filters do not see records that
    propagate from its children (``websockets.server`` into ``websockets``)."""

    _plain = logging.Formatter()  # for the traceback text, as any formatter renders it

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: the handler reports it as it always does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
