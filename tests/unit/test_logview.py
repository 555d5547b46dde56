"""Log lines of every format msgctl's programs write: times, levels, continuations, merging,
and the `--since` / `--level` / `--grep` / `--region` filters (`msgctl.deploy.logs`)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from msgctl.deploy import logs


def local(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(("raw", "when", "level", "text"), [
    ('{"ts": 1796336160.18, "level": "warning", "runtime": "gateway", "msg": "slow"}',
     1796336160.18, "warning", "slow"),
    ("[2026-12-03 22:14:22,628] INFO Registered MBean (kafka.utils.Log4jController$)",
     local("2026-12-03T22:14:22.628"), "info", "Registered MBean (kafka.utils.Log4jController$)"),
    ("[2026-12-03 22:14:23,001] WARN [s3proxy] slow disk (S3Proxy)",
     local("2026-12-03T22:14:23.001"), "warning", "[s3proxy] slow disk (S3Proxy)"),
    ("ERROR [main] 2026-12-03 22:14:55,663 CassandraDaemon.java:103 - Exception encountered",
     local("2026-12-03T22:14:55.663"), "error",
     "CassandraDaemon.java:103 - Exception encountered"),
    ("6677:M 03 Dec 2026 22:14:23.320 * Ready to accept connections tcp",
     local("2026-12-03T22:14:23.320"), "info", "Ready to accept connections tcp"),
    ("6677:C 03 Dec 2026 22:14:23.319 # Redis version=7.0.15",
     local("2026-12-03T22:14:23.319"), "warning", "Redis version=7.0.15"),
    ("%3|1796337384.131|FAIL|rdkafka#producer-1| [thrd:main]: Connect failed",
     1796337384.131, "error", "FAIL|rdkafka#producer-1| [thrd:main]: Connect failed"),
    ('{"level":"info","name":"us-east-kafka","time":"2026-12-03T22:14:23Z",'
     '"message":"Started proxy"}',
     datetime.fromisoformat("2026-12-03T22:14:23+00:00").timestamp(), "info", "Started proxy"),
    ("2026-12-03T22:14:23.5+01:00 ERROR something broke",
     datetime.fromisoformat("2026-12-03T22:14:23.5+01:00").timestamp(), "error",
     "something broke"),
])
def test_each_format_gives_its_time_level_and_message(raw: str, when: float, level: str,
                                                      text: str) -> None:
    got_when, got_level, got_text = logs.parse(raw)
    assert got_when == pytest.approx(when, abs=1e-3)
    assert (got_level, got_text) == (level, text)


@pytest.mark.parametrize("raw", ["\tadd.partitions.to.txn.retry.backoff.ms = 20",
                                 "Traceback (most recent call last):", "[not a time] INFO x",
                                 "{\"no\": \"stamp\"}", "12:00 lunch"])
def test_lines_without_a_time_of_their_own(raw: str) -> None:
    assert logs.parse(raw) == (None, None, raw)


def test_a_line_without_a_time_takes_the_one_before_it_in_its_file(tmp_path: Path) -> None:
    f = tmp_path / "kafka.local.log"
    f.write_text("[2026-12-03 22:14:22,812] ERROR KafkaConfig values: \n"
                 "\tadd.partitions.to.txn.retry.backoff.max.ms = 100\n"
                 "\n"
                 "[2026-12-03 22:14:23,000] INFO started\n"
                 "\tafter\n")
    lines = logs.read(f)
    assert [x.time for x in lines] == [local("2026-12-03T22:14:22.812")] * 2 + [
        local("2026-12-03T22:14:23")] * 2
    assert [x.level for x in lines] == ["error", "error", "info", "info"]
    assert [x.own_time for x in lines] == [True, False, True, False]
    assert lines[1].text == "\tadd.partitions.to.txn.retry.backoff.max.ms = 100"
    assert {x.log for x in lines} == {"kafka.local"} and {x.region for x in lines} == {"local"}


def test_a_tail_still_knows_the_time_of_the_line_it_continues(tmp_path: Path) -> None:
    f = tmp_path / "cassandra.local.log"
    f.write_text("INFO  [main] 2026-12-03 22:00:00,000 A.java:1 - first\n"
                 "ERROR [main] 2026-12-03 22:00:05,000 B.java:2 - broke\n"
                 "\tat one\n\tat two\n\tat three\n")
    got = logs.read(f, tail=2)
    assert [(x.text, x.level, x.time) for x in got] == [
        ("\tat two", "error", local("2026-12-03T22:00:05")),
        ("\tat three", "error", local("2026-12-03T22:00:05"))]
    assert logs.read(f, tail=0) == [] and len(logs.read(f, tail=50)) == 5


def test_leading_lines_take_the_first_time_and_a_file_without_any_its_mtime(
        tmp_path: Path) -> None:
    f = tmp_path / "node.local.log"
    f.write_text("warming up\n[2026-12-03 22:00:00,000] INFO go\n")
    assert [x.time for x in logs.read(f)] == [local("2026-12-03T22:00:00")] * 2
    plain = tmp_path / "supervisor.log"
    plain.write_text("a\nb\n")
    got = logs.read(plain)
    assert [x.time for x in got] == [plain.stat().st_mtime] * 2
    assert {x.region for x in got} == {None}


def test_engine_lines_interleave_with_runtime_lines_by_time(tmp_path: Path) -> None:
    """Before, every engine line sorted as time 0: first, and cut off by 50 runtime lines."""
    t0 = local("2026-12-03T22:00:00")
    runtime = tmp_path / "gateway.local.log"
    runtime.write_text("".join(json.dumps({"ts": t0 + i, "level": "info", "msg": f"r{i}"}) + "\n"
                               for i in range(0, 120, 2)))
    engine = tmp_path / "kafka.local.log"
    engine.write_text("".join(
        f"[{datetime.fromtimestamp(t0 + i).strftime('%Y-%m-%d %H:%M:%S')},000] INFO k{i}\n"
        f"\tcontinued k{i}\n" for i in range(1, 120, 2)))
    merged = list(logs.merge([logs.read(runtime), logs.read(engine)]))
    last = [x.text for x in merged[-50:]]
    # a runtime line every 2 s, an engine line (and its continuation) in between
    assert [sum(t.startswith(p) for t in last) for p in ("r", "k", "\tcontinued")] == [
        16, 17, 17]
    assert last[-3:] == ["r118", "k119", "\tcontinued k119"]
    times = [x.time or 0.0 for x in merged]
    assert times == sorted(times)


def test_the_filters_combine(tmp_path: Path) -> None:
    t0 = local("2026-12-03T22:00:00")
    f = tmp_path / "sequencer.us-east.log"
    f.write_text("\n".join([
        json.dumps({"ts": t0, "level": "error", "msg": "old failure"}),
        json.dumps({"ts": t0 + 60, "level": "info", "msg": "ready: kafka"}),
        json.dumps({"ts": t0 + 61, "level": "error", "msg": "kafka went away"}),
        "Traceback: the error's own stack",
        json.dumps({"ts": t0 + 62, "level": "warning", "msg": "retrying kafka"}),
    ]) + "\n")
    lines = logs.read(f, ["us-east", "eu-west"])
    keep = logs.Filter(since=t0 + 30, level="warning", grep=re.compile("kafka|stack"),
                       region="us-east")
    assert [x.text for x in lines if keep.keep(x)] == [
        "kafka went away", "Traceback: the error's own stack", "retrying kafka"]
    assert not any(logs.Filter(region="eu-west").keep(x) for x in lines)
    assert [x.text for x in lines if logs.Filter(level="ERROR").keep(x)] == [
        "old failure", "kafka went away", "Traceback: the error's own stack"]


def test_json_lines_for_scripts(tmp_path: Path) -> None:
    f = tmp_path / "redis.eu-west.log"
    f.write_text("6677:M 03 Dec 2026 22:14:23.320 * Ready to accept connections tcp\n")
    (line,) = logs.read(f)
    out = line.to_json()
    assert set(out) == {"time", "program", "region", "level", "line"}
    assert datetime.fromisoformat(out["time"]).timestamp() == pytest.approx(
        local("2026-12-03T22:14:23.320"))
    assert (out["program"], out["region"], out["level"], out["line"]) == (
        "redis.eu-west", "eu-west", "info", "Ready to accept connections tcp")


NOW = local("2026-12-04T12:00:00")


@pytest.mark.parametrize(("text", "when"), [
    ("90s", NOW - 90), ("10m", NOW - 600), ("1h30m", NOW - 5400), ("2d", NOW - 172800),
    ("45", NOW - 45), ("11:30", local("2026-12-04T11:30")),
    ("08:05:09", local("2026-12-04T08:05:09")), ("2026-12-03T22:00", local("2026-12-03T22:00")),
    ("2026-12-03 22:00:30", local("2026-12-03T22:00:30")),
    ("2026-12-03T22:00:00Z", datetime.fromisoformat("2026-12-03T22:00:00+00:00").timestamp()),
])
def test_since_takes_a_duration_or_a_time(text: str, when: float) -> None:
    assert logs.since(text, now=NOW) == pytest.approx(when)


@pytest.mark.parametrize("text", ["", "soon", "10x", "25:00", "2026-13-01", "-5m", "1h-"])
def test_a_bad_since_says_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match=r"bad --since .*use a duration"):
        logs.since(text, now=NOW)


def test_levels_of_every_spelling() -> None:
    assert [logs.level_name(w) for w in ("WARN", "warning", "Fatal", "notice", "TRACE",
                                         "loud", None)] == [
        "warning", "warning", "critical", "info", "debug", None, None]
