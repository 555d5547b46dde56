"""The operator's side of the agents without a network: how a failed call reads, the
unreachable-since marks, and the log stream's history marker (no line lost between)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from msgctl.agent import transport
from msgctl.deploy import logs as logs_mod
from msgctl.errors import MsgctlError
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


class TwoAgents:
    """`transport.Agents` for `msgctl logs`: east sends its lines and ends, west fails
    with `west_error` after `west_after` seconds (or, when None, sends a line too)."""

    def __init__(self, west_error: Exception | None, west_after: float) -> None:
        self.list = [transport.Agent("east", "127.0.0.1:1"),
                     transport.Agent("west", "127.0.0.2:1")]
        self.west_error, self.west_after = west_error, west_after

    def __call__(self, home: object) -> TwoAgents:
        return self

    def __enter__(self) -> TwoAgents:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def follow(self, agent: transport.Agent, request: object) -> object:
        from msgctl.v1 import agent_pb2 as pb

        if agent.region == "west":
            time.sleep(self.west_after)
            if self.west_error is not None:
                raise self.west_error
        yield pb.LogLine(log=f"node.{agent.region}", region=agent.region, time=1000.0,
                         level="info", text=f"hello from {agent.region}", raw="x",
                         own_time=True)


def run_logs(monkeypatch: object, agents: TwoAgents) -> list[str]:
    from msgctl.cli import logs as logs_cli

    monkeypatch.setattr(transport, "Agents", agents)  # type: ignore[attr-defined]
    got: list[str] = []
    logs_cli._through_agents(None, "*", logs_mod.Filter(), 5, False,  # type: ignore[arg-type]
                             lambda line: got.append(line.text))
    return got


def test_logs_warn_of_an_agent_that_fails_after_the_other_ended(
        monkeypatch: object, capsys: object) -> None:
    """However the streams' ends race, an unreachable agent is one warning line while
    another agent's lines are printed (once east had ended first, it was none)."""
    for after in (0.0, 0.3):
        unreachable = transport.Unreachable("the agent of west at 127.0.0.2:1 is unreachable")
        got = run_logs(monkeypatch, TwoAgents(unreachable, after))
        assert got == ["hello from east"]
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert err.count("\n") == 1 and "the agent of west" in err, (after, err)


def test_logs_of_agents_that_all_answer_have_no_warning(
        monkeypatch: object, capsys: object) -> None:
    got = run_logs(monkeypatch, TwoAgents(None, 0.1))
    assert sorted(got) == ["hello from east", "hello from west"]
    assert capsys.readouterr().err == ""  # type: ignore[attr-defined]


def test_logs_when_no_agent_answers_is_the_error(monkeypatch: object,
                                                capsys: object) -> None:
    class NoneAnswer(TwoAgents):
        def follow(self, agent: transport.Agent, request: object) -> object:
            raise transport.Unreachable(f"the agent of {agent.region} is unreachable")
            yield

    with pytest.raises(MsgctlError, match="unreachable"):
        run_logs(monkeypatch, NoneAnswer(None, 0.0))
    assert capsys.readouterr().err == ""  # type: ignore[attr-defined]  # the error alone
