"""The operator's side of the agents without a network: how a failed call reads, the
unreachable-since marks, and the log stream's history marker (no line lost between)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc

from msgctl.agent import transport
from msgctl.deploy import logs as logs_mod
from msgctl.home import Home


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_failures_read_as_a_few_words() -> None:
    refused = Failed(UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: "
                     "ipv4:127.0.0.2:7700: Failed to connect to remote host: Connection refused")
    assert transport._reason(refused) == "connection refused"
    assert not transport.tls_refused(refused)
    closed = Failed(UNAVAILABLE, "failed to connect to all addresses; last error: "
                    "UNAVAILABLE: ipv4:127.0.0.1:7700: Socket closed")
    assert transport.tls_refused(closed) and "TLS handshake" in transport._reason(closed)
    bad_ca = Failed(UNAVAILABLE, "Tls handshake failed (TSI_PROTOCOL_FAILURE): "
                    "CERTIFICATE_VERIFY_FAILED")
    assert transport.tls_refused(bad_ca)
    slow = Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert transport._reason(slow) == "no answer in time"


def test_an_agent_is_unreachable_since_its_first_failure(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    agent = transport.Agent("west", "127.0.0.2:7700")
    first = transport._mark(home, agent, "connection refused")
    time.sleep(0.01)
    assert transport._mark(home, agent, "no answer in time") == first
    assert transport._marks(home)[agent.address]["reason"] == "no answer in time"
    transport._mark(home, agent, None)  # it answered
    assert agent.address not in transport._marks(home)
    assert transport._mark(home, agent, "connection refused") > first


def test_a_follow_stream_marks_its_history_and_loses_nothing_after(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "sequencer.west.log"
    log.write_text("".join(f'{{"ts": {1000 + i}, "level": "info", "msg": "old {i}"}}\n'
                           for i in range(5)))
    marker, stop = object(), threading.Event()
    got: list[object] = []
    stream = logs_mod.stream(logs, "*", logs_mod.Filter(region="west"), 3, True, ["west"],
                             stopped=stop.is_set, poll=0.05, history_end=marker)
    got += [next(stream) for _ in range(4)]  # the last three, then the marker
    with log.open("a") as fh:  # written right after the history was read
        fh.write('{"ts": 2000, "level": "info", "msg": "new"}\n')
    got.append(next(stream))
    stop.set()
    texts = [x.text if isinstance(x, logs_mod.Line) else x for x in got]
    assert texts == ["old 2", "old 3", "old 4", marker, "new"]
