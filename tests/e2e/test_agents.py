"""The gRPC agents end to end: two regions (127.0.0.1 and 127.0.0.2), one agent each,
every verb through them under mutual TLS; a client without the CA's certificate refused;
a stopped agent a row in status while the other region stays under control; logs
followed over gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from msgctl import __version__
from msgctl.agent import transport
from msgctl.home import Home
from msgctl.tls import CaFiles, client_cert, init_ca
from msgctl.v1 import agent_pb2 as pb
from msgctl.v1 import agent_pb2_grpc as rpc
from tests.conftest import free_port, msgctl


def msgctl_argv() -> list[str]:
    return [sys.executable, "-m", "msgctl.cli.app"]

pytestmark = pytest.mark.e2e


class Two:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        port = free_port()
        self.agents = {"east": f"127.0.0.1:{port + 40}", "west": f"127.0.0.2:{port + 40}"}
        self.topology = root / "topology.yaml"
        self.topology.write_text(f"""name: agents-e2e
backend: embedded
regions:
  - name: east
    host: 127.0.0.1
    gateway: {{port: {port}}}
    agent: {self.agents['east']}
  - name: west
    host: 127.0.0.2
    gateway: {{port: {port}}}
    agent: {self.agents['west']}
""")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return msgctl(*args, "--home", str(self.home), check=check)

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json").stdout)

    def creds(self) -> transport.Credentials:
        info = json.loads((self.home / "deployment.json").read_text())["agents"]
        return transport.Credentials(Path(info["ca"]), Path(info["client_cert"]),
                                     Path(info["client_key"]))


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    d = Two(tmp_path_factory.mktemp("agents"))
    msgctl("up", "-t", str(d.topology), "--home", str(d.home))
    yield d
    msgctl("down", "--home", str(d.home), check=False)


def _pids(two: Two) -> dict[str, int | None]:
    report = two.json("status")
    assert isinstance(report, dict)
    return {r["program"]: r["pid"] for r in report["runtimes"]}


def test_agent_list_shows_both_agents_and_their_version(two: Two) -> None:
    rows = two.json("agent", "list")
    assert rows == [
        {"region": "east", "address": two.agents["east"], "state": "up",
         "version": __version__},
        {"region": "west", "address": two.agents["west"], "state": "up",
         "version": __version__}]


def test_status_and_restart_go_through_the_agents(two: Two) -> None:
    report = two.json("status")
    assert isinstance(report, dict)
    assert [a["state"] for a in report["agents"]] == ["up", "up"]
    before = _pids(two)
    out = two.json("restart", "node.west")
    assert isinstance(out, dict) and out["changed"] == ["node.west"]
    after = _pids(two)
    assert after["node.west"] != before["node.west"] and after["node.west"]
    assert after["node.east"] == before["node.east"]  # scoped to west's agent
    # the agent's own log says who served it
    log = (two.home / "logs" / "agent.west.log").read_text()
    assert f"region west on {two.agents['west']} (mutual TLS)" in log


def test_a_glob_that_matches_nothing_is_exit_2(two: Two) -> None:
    proc = two.run("restart", "nothing-here*", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "msgctl: no program or runtime matches 'nothing-here*'"


def test_a_client_without_the_cas_certificate_is_refused(two: Two,
                                                         tmp_path: Path) -> None:
    creds = two.creds()
    address = two.agents["east"]
    # only trusting the agent, presenting nothing
    bare = grpc.ssl_channel_credentials(root_certificates=creds.ca.read_bytes())
    with grpc.secure_channel(address, bare) as channel, pytest.raises(grpc.RpcError) as exc:
        rpc.SupervisorStub(channel).Status(pb.StatusRequest(), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    # a certificate from another CA
    other = CaFiles(tmp_path / "other-ca")
    init_ca(other, "someone else")
    cert, key = client_cert(other, "intruder", tmp_path / "intruder")
    forged = grpc.ssl_channel_credentials(root_certificates=creds.ca.read_bytes(),
                                          private_key=key.read_bytes(),
                                          certificate_chain=cert.read_bytes())
    with grpc.secure_channel(address, forged) as channel, pytest.raises(grpc.RpcError) as exc:
        rpc.SupervisorStub(channel).Status(pb.StatusRequest(), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    # plaintext
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
        rpc.SupervisorStub(channel).Status(pb.StatusRequest(), timeout=5)
    # and the operator's certificate works
    with creds.channel(address) as channel:
        reply = rpc.SupervisorStub(channel).Status(pb.StatusRequest(), timeout=5)
    assert reply.region == "east" and {p.region for p in reply.programs} == {"east"}
    # a CLI holding the other CA's certificate sees both agents refuse it (not "down")
    deployment = json.loads((two.home / "deployment.json").read_text())
    deployment["agents"] = {"ca": str(creds.ca), "client_cert": str(cert),
                            "client_key": str(key)}
    with transport.Agents(Home(two.home), deployment) as agents:
        _, rows = transport.status_all(Home(two.home), agents)
    assert [r["state"] for r in rows] == ["refused", "refused"], rows
    assert "TLS handshake" in rows[0]["error"] and "refused each other" in rows[0]["error"]


def test_health_and_reflection_are_served(two: Two) -> None:
    creds = two.creds()
    with creds.channel(two.agents["west"]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="msgctl.v1.Supervisor"), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"msgctl.v1.Supervisor", "msgctl.v1.Logs", "msgctl.v1.Chaos",
            "grpc.health.v1.Health"} <= names


def test_chaos_goes_through_an_agent(two: Two) -> None:
    fault = two.json("chaos", "pause", "node.west", "--duration", "30s")
    assert isinstance(fault, dict) and fault["kind"] == "pause"
    listed = two.json("chaos", "status")
    assert isinstance(listed, dict)
    assert [f["id"] for f in listed["faults"]] == [fault["id"]]
    two.run("chaos", "heal")
    listed = two.json("chaos", "status")
    assert isinstance(listed, dict) and listed["faults"] == []


def test_process_faults_never_touch_the_agents(two: Two) -> None:
    proc = two.run("chaos", "pause", "agent.*", "--duration", "5s", check=False)
    assert proc.returncode == 2 and "no program or runtime matches" in proc.stderr


def test_restart_everything_restarts_the_agents_last(two: Two) -> None:
    before = _pids(two)
    out = two.json("restart", "--yes")
    assert isinstance(out, dict)
    assert set(out["changed"]) == {"agent.east", "agent.west", "node.east", "node.west"}
    after = _pids(two)
    assert all(after[n] != before[n] for n in ("agent.east", "node.west"))
    rows = two.json("agent", "list")
    assert isinstance(rows, list) and [r["state"] for r in rows] == ["up", "up"]


def test_logs_are_followed_over_grpc(two: Two) -> None:
    lines: list[pb.LogLine] = []
    with transport.Agents(Home(two.home)) as agents:
        agent = agents.by_region("west")
        stream = agents.follow(agent, pb.FollowRequest(glob="*", lines=0, follow=True))

        def read() -> None:
            for m in stream:
                lines.append(m)
                if "ready" in m.text and m.log.startswith("sequencer"):
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1.0)
        two.run("restart", "node.west")
        reader.join(30)
    assert any(m.log == "sequencer.west" and "ready" in m.text for m in lines), lines[-5:]
    # no history asked: the end of it comes first, then only west's lines
    assert lines[0] == pb.LogLine() and {m.region for m in lines[1:]} == {"west"}
    out = two.run("logs", "--region", "west", "-n", "5", "--json").stdout.splitlines()
    assert out and all(json.loads(x)["region"] == "west" for x in out)


def test_logs_follow_through_the_cli(two: Two) -> None:
    proc = subprocess.Popen(
        [*msgctl_argv(), "logs", "-f", "-n", "0", "--json", "--region", "west", "sequencer*",
         "--home", str(two.home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        two.run("restart", "node.west")
        deadline = time.monotonic() + 30
        seen = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if "ready" in seen[-1]["line"]:
                break
        assert seen and seen[-1]["program"] == "sequencer.west", seen
        assert all(r["region"] == "west" for r in seen)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_stopped_agent_is_a_row_while_the_other_region_is_controlled(two: Two) -> None:
    two.run("stop", "agent.west")
    try:
        report = two.json("status")
        assert isinstance(report, dict)
        west = next(a for a in report["agents"] if a["region"] == "west")
        assert west["state"] == "unreachable" and west["since"] and west["reason"]
        row = next(r for r in report["runtimes"] if r["program"] == "agent.west")
        assert row["state"] == "OFFLINE" and "unreachable since" in row["message"]
        assert {r["state"] for r in report["runtimes"] if r["region"] == "west"
                and r["program"] != "agent.west"} == {"UNKNOWN"}
        # east is still under control
        before = _pids(two)["node.east"]
        two.run("restart", "node.east")
        assert _pids(two)["node.east"] != before
        # a command aimed at west is one line, exit 1, and changes nothing
        proc = two.run("restart", "node.west", check=False)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1
        assert f"the agent of west at {two.agents['west']} is unreachable" in proc.stderr
        # logs: the regions that answer, and a warning line for the one that does not
        proc = two.run("logs", "-n", "5", "--json", check=False)
        assert proc.returncode == 0, proc.stderr
        assert {json.loads(x)["region"] for x in proc.stdout.splitlines()} == {"east"}
        assert "the agent of west" in proc.stderr and proc.stderr.count("\n") == 1
        text = two.run("status").stdout
        assert "OFFLINE" in text and "unreachable since" in text
        assert max(len(line) for line in text.splitlines()) <= 80
    finally:
        two.run("start", "agent.west")
    rows = two.json("agent", "list")
    assert isinstance(rows, list) and [r["state"] for r in rows] == ["up", "up"]


def test_serving_where_an_agent_already_listens_is_one_line(two: Two) -> None:
    proc = two.run("agent", "serve", "--region", "east", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"the agent cannot listen on {two.agents['east']}" in proc.stderr


def test_version_note() -> None:
    major, minor, *_ = __version__.split(".")
    assert transport.version_note("x", __version__) is None
    assert transport.version_note("x", f"{major}.{minor}.99") is None
    note = transport.version_note("eu-west", f"{int(major) + 1}.0.0")
    assert note is not None and "eu-west" in note and __version__ in note
