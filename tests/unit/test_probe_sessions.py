"""The supervisor's looks at a Cassandra node keep one logged-in session between them:
every login costs the node a bcrypt check of the password on its request threads,
which a fresh session every 10 s paid under live traffic. The later looks also leave
out the start-time steps (logins and rights, Kafka's ACLs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from msgctl.infra import probes
from msgctl.supervisor import daemon
from msgctl.supervisor.program import ENGINE, Program


class Row:
    release_version = "5.0.6"
    data_center = "dc1"


class Session:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def execute(self, query: str) -> Any:
        if self.cluster.fail or self.cluster.closed:
            raise OSError("connection lost")
        self.cluster.queries += 1
        return type("Rows", (), {"one": lambda _self: Row()})()


class FakeCluster:
    made: list[FakeCluster] = []

    def __init__(self, light: bool) -> None:
        self.light = light
        self.logins = 0
        self.queries = 0
        self.closed = False
        self.fail = False
        FakeCluster.made.append(self)

    def connect(self) -> Session:
        self.logins += 1
        return Session(self)

    def shutdown(self) -> None:
        self.closed = True


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch) -> list[FakeCluster]:
    FakeCluster.made = []
    monkeypatch.setattr(probes, "_cluster",
                        lambda *a, light=False, **k: FakeCluster(light))
    yield FakeCluster.made
    probes.forget_sessions()


def look(keep: bool) -> dict[str, Any] | None:
    return asyncio.run(probes.cql("127.0.0.1", 9042, "dc1", keep=keep))


def test_kept_looks_log_in_once(clusters: list[FakeCluster]) -> None:
    answers = [look(keep=True) for _ in range(5)]
    assert answers == [{"version": "5.0.6", "datacenter": "dc1"}] * 5
    assert len(clusters) == 1 and clusters[0].logins == 1 and clusters[0].queries == 5
    assert clusters[0].light and not clusters[0].closed  # no schema or token map kept
    probes.forget_sessions()
    assert clusters[0].closed


def test_a_look_without_keep_logs_in_every_time(clusters: list[FakeCluster]) -> None:
    for _ in range(3):
        assert look(keep=False) is not None
    assert len(clusters) == 3 and all(c.closed and c.logins == 1 for c in clusters)


def test_a_failed_look_closes_its_session_and_the_next_logs_in_again(
        clusters: list[FakeCluster]) -> None:
    assert look(keep=True) is not None
    clusters[0].fail = True  # the node went away
    assert look(keep=True) is None
    assert clusters[0].closed
    assert look(keep=True) is not None  # back: a new login, kept again
    assert len(clusters) == 2 and not clusters[1].closed
    assert look(keep=True) is not None and clusters[1].logins == 1


def test_the_supervisors_later_looks_leave_out_the_start_time_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[dict[str, Any], bool]] = []

    async def check(spec: dict[str, Any], timeout: float = 5.0, keep: bool = False
                    ) -> dict[str, Any]:
        seen.append((spec, keep))
        return {"version": "5.0.6"}

    monkeypatch.setattr(probes, "check", check)
    cql = Program(name="cassandra.r", region="r", runtimes=[], argv=["true"], health_url="",
                  endpoint="h:1", kind=ENGINE,
                  probe={"kind": "cql", "host": "h", "port": 1, "setup": {"seed": "h"}})
    kafka = Program(name="kafka.r", region="r", runtimes=[], argv=["true"], health_url="",
                    endpoint="h:1", kind=ENGINE,
                    probe={"kind": "kafka", "bootstrap": "h:1", "acls": ["r"]})
    for program in (cql, kafka):
        assert asyncio.run(daemon.check(program, keep=True)) is not None
        assert asyncio.run(daemon.check(program, live=True, keep=True)) is not None
    (start_cql, k1), (live_cql, k2), (start_kafka, _), (live_kafka, _) = seen
    assert start_cql["setup"] == {"seed": "h"} and "setup" not in live_cql
    assert start_kafka["acls"] == ["r"] and "acls" not in live_kafka
    assert live_cql["host"] == "h" and live_kafka["bootstrap"] == "h:1"
    assert k1 and k2
