"""The deployment's log files as time-stamped lines: what `msgctl logs` merges and filters.

Each file under ``<home>/logs`` is one program's output (``node.local``, ``kafka.local``)
or one runtime's JSON log (``gateway.local``). Their lines come in several formats:
the runtimes' JSON records (``ts`` in epoch seconds), Kafka, MirrorMaker and S3Proxy
(``[2026-12-04 12:00:00,123] INFO …``), Cassandra (``INFO  [main] 2026-12-04
12:00:00,123 …``), Redis (``4242:M 04 Dec 2026 12:00:00.123 * …``), librdkafka inside a
runtime's output (``%4|1796336145.716|FAC|name| …``), Toxiproxy's JSON (``time``), and
any line that starts with an ISO 8601 time. A line without a time of its own (a stack
trace, a config dump, a plain print) is a continuation of the line before it in the same
file: it takes that line's time and level. Files are merged by time, each file's own
order kept. Nothing here prints.
"""

from __future__ import annotations

import heapq
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

LEVELS = ("debug", "info", "warning", "error", "critical")
_ALIASES = {
    "trace": "debug", "fine": "debug", "finer": "debug", "verbose": "debug", "all": "debug",
    "notice": "info", "warn": "warning", "err": "error", "severe": "error",
    "fatal": "critical", "crit": "critical", "panic": "critical", "alert": "critical",
    "emerg": "critical",
}
# syslog severities, as librdkafka prints them (%3|...)
_SYSLOG = {0: "critical", 1: "critical", 2: "critical", 3: "error", 4: "warning",
           5: "info", 6: "info", 7: "debug"}
_REDIS = {".": "debug", "-": "debug", "*": "info", "#": "warning"}
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}

_LEVEL_WORD = r"(TRACE|DEBUG|FINE|INFO|NOTICE|WARN|WARNING|ERROR|SEVERE|FATAL|CRITICAL)"
# Kafka, MirrorMaker (log4j2 "[%d] %p %m (%c)%n") and S3Proxy (logback "[%d] %level %msg")
_BRACKETED = re.compile(
    r"^\[(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[,.](\d{1,6}))?\]\s+" + _LEVEL_WORD
    + r"\s+(.*)$")
# Cassandra (logback "%-5level [%thread] %date{ISO8601} %F:%L - %msg%n")
_CASSANDRA = re.compile(
    r"^" + _LEVEL_WORD + r"\s+\[[^\]]*\]\s+(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})"
    r"(?:[,.](\d{1,6}))?\s+(.*)$")
# Redis ("pid:role dd Mon [yyyy] HH:MM:SS.mmm <level mark> message")
_REDIS_LINE = re.compile(
    r"^\d+:[A-Z] (\d{1,2}) ([A-Za-z]{3})(?: (\d{4}))? (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r" ([.\-*#]) (.*)$")
# librdkafka's log lines in a runtime's output ("%<syslog level>|<epoch>|<facility>|...")
_RDKAFKA = re.compile(r"^%(\d)\|(\d+(?:\.\d+)?)\|(.*)$")
# anything else that starts with an ISO 8601 time, perhaps followed by a level
_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"\s+(?:" + _LEVEL_WORD + r"\b:?\s*)?(.*)$")

MAX_READ = 16 << 20  # of a file's end: history older than that is not worth the wait
TAIL_LOOKBACK = 2000  # lines before a tail to find the time its first line continues


@dataclass
class Line:
    """One log line: when (epoch seconds, None: unknown), how bad (one of LEVELS, None:
    unknown), the message without its stamp, and the line as written."""

    log: str  # the file's name without .log: node.local, kafka.us-east, supervisor
    region: str | None
    time: float | None
    level: str | None
    text: str
    raw: str
    own_time: bool  # the line carried its time (else: the line before it did)

    def to_json(self) -> dict[str, Any]:
        """``msgctl logs --json``: {"time", "program", "region", "level", "line"}."""
        when = (datetime.fromtimestamp(self.time).astimezone().isoformat(
            timespec="milliseconds") if self.time is not None else None)
        return {"time": when, "program": self.log, "region": self.region,
                "level": self.level, "line": self.text}


def level_name(word: str | None) -> str | None:
    """A level word of any of the formats as one of LEVELS (None: not a level)."""
    if not word:
        return None
    w = word.strip().lower()
    w = _ALIASES.get(w, w)
    return w if w in LEVELS else None


def _local(date: str, clock: str, fraction: str | None) -> float | None:
    """A naive local date and time (the engines log in the machine's time zone)."""
    try:
        dt = datetime.fromisoformat(f"{date}T{clock}")
    except ValueError:
        return None
    return dt.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _from_json(raw: str) -> tuple[float | None, str | None, str] | None:
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    if "msg" in rec and isinstance(rec.get("ts"), int | float):  # a runtime's record
        text = str(rec["msg"])
        if rec.get("exc"):
            text += "\n" + str(rec["exc"])
        return float(rec["ts"]), level_name(str(rec.get("level", "info"))), text
    if isinstance(rec.get("time"), str):  # Toxiproxy (zerolog); its request lines have no message
        try:
            when = datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
        return when, level_name(str(rec.get("level", ""))), str(
            rec.get("message", rec.get("msg", raw)))
    return None


def parse(raw: str) -> tuple[float | None, str | None, str]:
    """(time, level, message) of one line; time None when it carries none of its own."""
    first = raw[:1]
    if not first or first.isspace():  # a config dump's or a stack trace's next line
        return None, None, raw
    if first == "{":
        got = _from_json(raw)
        if got is not None:
            return got
    if first == "[" and (m := _BRACKETED.match(raw)):
        return _local(m[1], m[2], m[3]), level_name(m[4]), m[5]
    if first.isalpha() and (m := _CASSANDRA.match(raw)):
        return _local(m[2], m[3], m[4]), level_name(m[1]), m[5]
    if first.isdigit() and (m := _REDIS_LINE.match(raw)):
        month = _MONTHS.get(m[2].lower())
        if month is not None:
            year = m[3] or str(time.localtime().tm_year)
            when = _local(f"{year}-{month:02d}-{int(m[1]):02d}", f"{m[4]}:{m[5]}:{m[6]}",
                          m[7])
            if when is not None:
                return when, _REDIS[m[8]], m[9]
    if first == "%" and (m := _RDKAFKA.match(raw)):
        return float(m[2]), _SYSLOG.get(int(m[1])), m[3]
    if first.isdigit() and (m := _ISO.match(raw)):
        try:
            stamp = datetime.fromisoformat(m[1].replace(",", ".").replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return stamp.timestamp(), level_name(m[2]), m[3]
    return None, None, raw


def region_of(log: str, regions: Iterable[str] = ()) -> str | None:
    """The region a log belongs to: its name's last part (``kafka.us-east``); with the
    deployment's `regions` known, only one of them."""
    if "." not in log:
        return None
    region = log.rsplit(".", 1)[1]
    known = list(regions)
    return region if not known or region in known else None


class Reader:
    """Turns one file's lines into `Line`s, carrying time and level over to the lines
    that have none; kept per file by `msgctl logs -f` between reads."""

    def __init__(self, log: str, region: str | None) -> None:
        self.log = log
        self.region = region
        self.time: float | None = None
        self.level: str | None = None

    def line(self, raw: str) -> Line:
        when, level, text = parse(raw)
        own = when is not None
        if own:
            self.time = when
            # a stamped line with no level word of its own (rare) keeps the level before
            self.level = level or self.level
        else:
            text = raw
        return Line(self.log, self.region, when if own else self.time, self.level, text, raw,
                    own)


def read(path: Path, regions: Iterable[str] = (), tail: int | None = None) -> list[Line]:
    """Every non-blank line of a log file (its last `MAX_READ` bytes), in file order; with
    `tail`, only that many of the last ones (parsing the rest would be wasted: unfiltered,
    the newest lines of all are among each file's newest).

    Lines before the first stamped one take its time; a file with no stamp at all takes
    the time it was last written."""
    log = path.stem
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - MAX_READ))
        data = fh.read()
    text = data.decode("utf-8", "replace")
    raws = text.splitlines()
    if size > MAX_READ and raws:
        raws = raws[1:]  # the first one is cut
    raws = [r for r in raws if r.strip()]
    if tail == 0:
        return []
    start = 0
    if tail is not None and tail < len(raws):
        # back to the stamped line the first kept one continues (a long stack trace at most)
        start = len(raws) - tail
        head = start
        while head > 0 and start - head < TAIL_LOOKBACK and parse(raws[head])[0] is None:
            head -= 1
        reader = Reader(log, region_of(log, regions))
        for r in raws[head:start]:
            reader.line(r)
    else:
        reader = Reader(log, region_of(log, regions))
    out = [reader.line(r) for r in raws[start:]]
    first = next((x.time for x in out if x.time is not None), None)
    if first is None:
        try:
            first = path.stat().st_mtime
        except OSError:
            first = None
    for x in out:
        if x.time is not None:
            break
        x.time = first
    return out


def merge(files: list[list[Line]]) -> Iterator[Line]:
    """The lines of several files interleaved by time, each file's order kept."""
    return heapq.merge(*files, key=lambda x: x.time if x.time is not None else 0.0)


@dataclass
class Filter:
    """What `msgctl logs` keeps: lines at or after `since`, at `level` or worse, whose
    message matches `grep`, of `region`. A line of unknown level counts as info."""

    since: float | None = None
    level: str | None = None
    grep: re.Pattern[str] | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.level is not None:
            level = level_name(self.level)
            if level is None:
                raise ValueError(f"unknown level '{self.level}'; one of {', '.join(LEVELS)}")
            self.level = level

    def keep(self, line: Line) -> bool:
        if self.region is not None and line.region != self.region:
            return False
        if self.since is not None and (line.time is None or line.time < self.since):
            return False
        if self.level is not None and LEVELS.index(line.level or "info") < LEVELS.index(
                self.level):
            return False
        return self.grep is None or self.grep.search(line.text) is not None


_SPAN = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                   r"(?:(\d+(?:\.\d+)?)s)?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def since(text: str, now: float | None = None) -> float:
    """The epoch time `--since` names: a duration back from now (``90s``, ``10m``,
    ``1h30m``, ``2d``), an ISO 8601 time (``2026-12-04T12:00``, ``…Z``, ``…+01:00``; local
    time without an offset) or a clock time today (``12:30``, ``12:30:15``). ValueError with
    a message fit for the user otherwise."""
    value = text.strip()
    now = time.time() if now is None else now
    m = _SPAN.match(value.lower())
    if value and m and any(m.groups()):
        d, h, mins, s = (float(g) if g else 0.0 for g in m.groups())
        return now - (d * 86400 + h * 3600 + mins * 60 + s)
    if value.isdigit():  # a bare number: seconds, as --interval and --timeout take them
        return now - float(value)
    c = _CLOCK.match(value)
    if c:
        hour, minute, sec = int(c[1]), int(c[2]), int(c[3] or 0)
        if hour < 24 and minute < 60 and sec < 60:
            today = datetime.fromtimestamp(now)
            return today.replace(hour=hour, minute=minute, second=sec,
                                 microsecond=0).timestamp()
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    raise ValueError(f"bad --since '{text}': use a duration back from now (90s, 10m, 1h30m, "
                     "2d) or a time (2026-12-04T12:00, 12:30)")


def files(logs: Path, pattern: str, region: str | None = None) -> list[Path]:
    """The log files under `logs` whose name matches the glob `pattern` (and `region`)."""
    import fnmatch

    return [f for f in sorted(logs.glob("*.log")) if fnmatch.fnmatch(f.stem, pattern)
            and (region is None or region_of(f.stem) == region)]


def stream(logs: Path, pattern: str, keep: Filter, lines: int, follow: bool,
           regions: Iterable[str] = (), stopped: Any = None,
           poll: float = 0.2, history_end: Any = None) -> Iterator[Any]:
    """The last `lines` lines `keep` keeps of the matching files, merged by time; then,
    with `follow`, `history_end` (when given) and each new kept line as it is written
    (files that appear later too) until `stopped()` is true: no line written between
    the two parts is lost. What `msgctl logs` prints and an agent's Logs.Follow
    streams."""
    regions = list(regions)
    chosen = files(logs, pattern, keep.region)
    readers: dict[Path, Reader] = {}
    offsets: dict[Path, int] = {}
    history: list[list[Line]] = []
    unfiltered = keep.since is None and keep.level is None and keep.grep is None
    for f in chosen:
        try:
            offsets[f] = f.stat().st_size
            # unfiltered, each file's newest `lines` hold the newest of all
            got = read(f, regions, tail=lines if unfiltered else None)
        except FileNotFoundError:
            continue
        history.append([x for x in got if keep.keep(x)])
        readers[f] = Reader(f.stem, region_of(f.stem, regions))
        if got:  # a line -f reads next without a stamp continues this one
            readers[f].time, readers[f].level = got[-1].time, got[-1].level
    merged = list(merge(history))
    yield from (merged[-lines:] if lines else [])
    if not follow:
        return
    if history_end is not None:
        yield history_end
    pending: dict[Path, bytes] = {}
    while stopped is None or not stopped():
        for f in files(logs, pattern, keep.region):
            if f not in readers:
                readers[f] = Reader(f.stem, region_of(f.stem, regions))
                offsets[f] = 0
            try:
                size = f.stat().st_size
            except FileNotFoundError:
                continue
            if size < offsets.get(f, 0):
                offsets[f] = 0  # truncated or replaced
            if size == offsets.get(f, 0):
                continue
            with f.open("rb") as fh:
                fh.seek(offsets.get(f, 0))
                chunk = pending.pop(f, b"") + fh.read()
                offsets[f] = fh.tell()
            *complete, rest = chunk.split(b"\n")
            if rest:
                pending[f] = rest
            for raw in complete:
                text = raw.decode("utf-8", "replace")
                if not text.strip():
                    continue
                line = readers[f].line(text)
                if line.time is None:
                    line.time = time.time()  # a new file's first lines: just written
                if keep.keep(line):
                    yield line
        time.sleep(poll)
