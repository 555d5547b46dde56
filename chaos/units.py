"""Durations and rates as operators type them: ``60s``, ``300ms``, ``2m``, ``256kbit``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|b|kb|mb)?\s*$",
                   re.IGNORECASE)
# bytes per second of one unit; bits are divided by 8 (tc's spelling: kbit = 1000 bit)
_RATE_SCALE = {"bit": 1 / 8, "kbit": 1000 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
               "bps": 1.0, "b": 1.0, "kbps": 1000.0, "kb": 1000.0, "mbps": 1e6, "mb": 1e6}


class UnitError(ValueError):
    """A value that is not a duration or rate; the message says what was expected."""


def seconds(text: str | float | int, what: str = "duration") -> float:
    """``"60s"``, ``"300ms"``, ``"2m"``, ``"1h"`` or a bare number of seconds."""
    if isinstance(text, bool):
        raise UnitError(f"{what} must be a duration like 60s, 300ms or 2m")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise UnitError(f"{what} must be a duration like 60s, 300ms or 2m, not '{text}'")
        value = float(match.group(1)) * _SCALE[match.group(2)]
    if value < 0:
        raise UnitError(f"{what} must not be negative")
    return value


def bytes_per_second(text: str | int | float, what: str = "bandwidth") -> float:
    """``"256kbit"`` (tc's units: kbit = 1000 bits), ``"1mbit"``, ``"64kb"`` or bytes/s."""
    if isinstance(text, bool):
        raise UnitError(f"{what} must be a rate like 256kbit or 1mbit")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _RATE.match(str(text))
        if not match:
            raise UnitError(f"{what} must be a rate like 256kbit or 1mbit, not '{text}'")
        unit = (match.group(2) or "b").lower()
        value = float(match.group(1)) * _RATE_SCALE[unit]
    if value <= 0:
        raise UnitError(f"{what} must be positive")
    return value


def show_seconds(value: float | None) -> str:
    """A duration for people: 850ms, 12.5s, 2m05s."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    return f"{int(value // 60)}m{int(value % 60):02d}s"
