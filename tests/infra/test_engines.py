"""Real engines under the supervisor: `msgctl infra start`, probes, status, restart, stop.

One stack per module (Cassandra is the slow one), on free ports in a temporary
home; the engine cache is the user's (``scripts/test`` fills it before pytest).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from msgctl.home import Home
from msgctl.infra import probes, security
from msgctl.supervisor import daemon
from tests.conftest import free_port, msgctl

WARMUP_S = 4  # short: what is checked is that each JVM was driven, not how warm it got


@dataclass
class Stack:
    home: Path
    topology: Path
    ports: dict[str, int]
    started: dict[str, Any] = field(default_factory=dict)  # `infra start --json`

    def status(self) -> dict[str, Any]:
        return json.loads(msgctl("status", "--json", "--home", str(self.home),
                                 check=False).stdout)

    def engines(self) -> dict[str, dict[str, Any]]:
        return {r["program"]: r for r in self.status()["runtimes"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("engines")
    ports = {k: free_port() for k in ("gateway", "kafka", "controller", "cql", "storage", "jmx",
                                      "redis", "s3")}
    topo = root / "engines.yaml"
    topo.write_text(yaml.safe_dump({"name": "engines", "backend": "cluster", "regions": [{
        "name": "lab", "host": "127.0.0.1", "gateway": {"port": ports["gateway"]},
        "engines": {
            "kafka": {"port": ports["kafka"], "controller_port": ports["controller"],
                      "heap_mb": 384, "warmup_s": WARMUP_S},
            "cassandra": {"port": ports["cql"], "storage_port": ports["storage"],
                          "jmx_port": ports["jmx"], "heap_mb": 512, "warmup_s": WARMUP_S},
            "redis": {"port": ports["redis"]},
            "s3": {"port": ports["s3"], "heap_mb": 192}}}]}))
    st = Stack(root / "home", topo, ports)
    st.started = json.loads(msgctl("infra", "start", "--home", str(st.home), "-t", str(topo),
                                   "--json", timeout=400).stdout)
    yield st
    msgctl("infra", "stop", "--home", str(st.home), check=False, timeout=300)


def test_each_engine_is_running_and_answers_its_own_protocol(stack: Stack) -> None:
    rows = stack.engines()
    assert list(rows) == ["kafka.lab", "cassandra.lab", "redis.lab", "s3.lab"]
    for row in rows.values():
        assert row["state"] == "RUNNING" and row["kind"] == "engine" and row["pid"]
    p = stack.ports
    assert rows["kafka.lab"]["endpoint"] == f"127.0.0.1:{p['kafka']}"
    # engine TLS is on by default (the topology has no `tls:`): rediss://, https://
    assert rows["redis.lab"]["endpoint"] == f"rediss://127.0.0.1:{p['redis']}/0"
    assert rows["s3.lab"]["endpoint"] == f"https://127.0.0.1:{p['s3']}"
    conf = stack.home / "engines" / "s3.lab" / "conf"
    creds = json.loads((conf / "credentials.json").read_text())
    assert (conf / "credentials.json").stat().st_mode & 0o077 == 0  # generated, private

    sec = security.load(stack.home)
    assert sec is not None
    me = sec.client(security.ADMIN)  # msgctl's own identity

    async def ask() -> tuple[Any, Any, Any]:
        return await asyncio.gather(
            probes.cql("127.0.0.1", p["cql"], "lab", security=me),
            probes.kafka(f"127.0.0.1:{p['kafka']}", security=me),
            probes.redis(f"rediss://127.0.0.1:{p['redis']}/0", security=me))

    cql, kafka, redis = asyncio.run(ask())
    s3_url, ca = f"https://127.0.0.1:{p['s3']}", str(sec.ca)
    assert asyncio.run(probes.s3(s3_url, creds["identity"], creds["credential"],
                                 ca=ca)) is not None
    # a real signed S3 call: wrong credentials are refused
    assert asyncio.run(probes.s3(s3_url, creds["identity"], "wrong" * 8, ca=ca)) is None
    assert cql == {"version": "5.0.6", "datacenter": "lab"}  # the region is the data center
    assert kafka is not None and kafka["brokers"] == 1
    assert redis is not None and redis["version"]


def test_the_supervisor_looks_at_cassandra_over_one_kept_login(stack: Stack) -> None:
    """Its looks every ENGINE_HEALTH_INTERVAL reuse the session of its readiness look: a
    login costs the node a bcrypt check on its request threads (100-170 ms of a core)."""
    supervisor = psutil.Process(Home(stack.home).supervisor_pid())

    def connections() -> set[int]:
        return {c.laddr.port for c in supervisor.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == stack.ports["cql"]
                and c.status == psutil.CONN_ESTABLISHED}

    first = connections()
    time.sleep(daemon.ENGINE_HEALTH_INTERVAL * 1.5)  # at least one look in between
    assert first, "no session kept between looks"
    assert connections() == first
    assert stack.engines()["cassandra.lab"]["state"] == "RUNNING"


def test_start_waits_for_the_jvms_warm_up_which_leaves_no_topic(stack: Stack) -> None:
    warm = {p["name"]: p.get("warmup") for p in stack.started["programs"]}
    assert warm["redis.lab"] is None and warm["s3.lab"] is None  # not JVMs the path loads
    kafka, cql = warm["kafka.lab"], warm["cassandra.lab"]
    assert kafka["state"] == "done" and cql["state"] == "done", warm
    # bounded by warmup_s (the JIT of a fresh JVM does not settle in 4 s)
    assert WARMUP_S <= kafka["seconds"] < WARMUP_S + 30 and not kafka["jit_settled"]
    assert kafka["transactions"] > 0 and kafka["produced"] > 0
    # the store writer's batches: 1 to 4 conversations of 1 to 3 messages, 9 at most
    assert cql["rounds"] > 0 and cql["rounds"] <= cql["messages"] <= 9 * cql["rounds"]

    from confluent_kafka.admin import AdminClient

    sec = security.load(stack.home)
    assert sec is not None
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{stack.ports['kafka']}",
                         **security.kafka_client(sec)})
    topics = set(admin.list_topics(timeout=10).topics)
    assert not {t for t in topics if t.startswith("msgctl.warmup")}, topics
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    assert not {g for g in groups if g.startswith("msgctl-warmup")}, groups


def test_the_jvms_log_their_collections(stack: Stack) -> None:
    """Kafka (the parallel collector) and Cassandra (G1) each log their collections to
    gc.log in their own logs folder; starting and warming up alone collect young ones."""
    for engine, collector in (("kafka.lab", "Using Parallel"), ("cassandra.lab", "Using G1")):
        text = (stack.home / "engines" / engine / "logs" / "gc.log").read_text()
        assert collector in text and "Pause Young" in text, (engine, text[-500:])
        # neither stops for a full collection: the broker's classes stay under its first
        # metaspace threshold, where with the JVM's default (21 MB) the parallel collector
        # made a full collection two or three times while it started, and minutes later
        assert "Pause Full" not in text, (engine, text[-2000:])


def test_cassandra_runs_with_the_memtables_compaction_and_commit_log_msgctl_wrote(
        stack: Stack) -> None:
    """The running node took the memtable allocation, the compaction limit and the
    commit log's direct writes msgctl wrote (a `memtable` block it did not know would
    have stopped it from starting; a setting it ignored would show here)."""
    from cassandra.cluster import Cluster

    from tests import engines

    cluster = Cluster(["127.0.0.1"], port=stack.ports["cql"],
                      **engines.cassandra_kwargs(stack.home))
    try:
        session = cluster.connect()
        rows = {r.name: r.value for r in session.execute(
            "SELECT name, value FROM system_views.settings WHERE name IN "
            "('memtable_allocation_type', 'compaction_throughput', "
            "'commitlog_disk_access_mode')")}
    finally:
        cluster.shutdown()
    assert rows.get("memtable_allocation_type") == "offheap_objects", rows
    assert rows.get("compaction_throughput") == "8MiB/s", rows
    # direct writes where the commit log's file system takes O_DIRECT (this one's does;
    # a node that could not write its commit log so would not have started)
    assert rows.get("commitlog_disk_access_mode") == "direct", rows


def test_infra_status_probes_live(stack: Stack) -> None:
    out = json.loads(msgctl("infra", "status", "--json", "--home", str(stack.home)).stdout)
    rows = {r["engine"]: r for r in out["engines"]}
    assert set(rows) == {"kafka", "cassandra", "redis", "s3"}
    assert all(r["healthy"] and r["state"] == "RUNNING" for r in rows.values())
    assert rows["kafka"]["version"] == "4.1.1" and rows["cassandra"]["version"] == "5.0.6"
    assert rows["s3"]["version"] == "2.6.0" and rows["s3"]["ports"] == {"port": stack.ports["s3"]}
    assert rows["s3"]["data_dir"] == str(stack.home / "engines" / "s3.lab" / "data")
    assert rows["cassandra"]["ports"] == {"port": stack.ports["cql"],
                                          "storage_port": stack.ports["storage"],
                                          "jmx_port": stack.ports["jmx"]}
    assert rows["kafka"]["data_dir"] == str(stack.home / "engines" / "kafka.lab" / "data")
    table = msgctl("infra", "status", "--home", str(stack.home)).stdout
    assert "cassandra" in table and "no answer" not in table


def test_kafka_storage_is_formatted_once_with_a_kept_cluster_id(stack: Stack) -> None:
    data = stack.home / "engines" / "kafka.lab" / "data"
    cluster_id = (data / "cluster-id").read_text().strip()
    meta = (data / "log" / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}" in meta
    logs = (stack.home / "logs" / "kafka.lab.log").read_text()
    assert "no appenders" not in logs and "SLF4J: " not in logs  # log4j2, one binding


def test_s3proxy_keeps_objects_on_the_filesystem(stack: Stack) -> None:
    from runtime.media.s3 import s3_client

    creds = json.loads((stack.home / "engines" / "s3.lab" / "conf" / "credentials.json")
                       .read_text())
    client = s3_client(f"https://127.0.0.1:{stack.ports['s3']}", creds["identity"],
                       creds["credential"], "us-east-1",
                       verify=str(stack.home / "tls" / "ca.pem"))
    client.create_bucket(Bucket="probe-test")
    client.put_object(Bucket="probe-test", Key="a/b", Body=b"hello", ContentType="text/plain")
    head = client.head_object(Bucket="probe-test", Key="a/b")
    assert (head["ContentLength"], head["ContentType"]) == (5, "text/plain")
    data = stack.home / "engines" / "s3.lab" / "data"
    assert (data / "probe-test" / "a" / "b").read_bytes() == b"hello"
    logs = (stack.home / "logs" / "s3.lab.log").read_text()
    assert "DEBUG" not in logs  # our logback config, not S3Proxy's debug default


def test_an_engine_restarts_under_msgctl(stack: Stack) -> None:
    before = stack.engines()["redis.lab"]["pid"]
    out = msgctl("restart", "redis*", "--home", str(stack.home)).stdout
    assert "restarted redis.lab" in out and "RUNNING" in out
    after = stack.engines()["redis.lab"]
    assert after["state"] == "RUNNING" and after["pid"] != before


def test_up_is_refused_while_only_the_engines_run(stack: Stack) -> None:
    proc = msgctl("up", "--home", str(stack.home), "-t", str(stack.topology), check=False)
    assert proc.returncode == 2 and "msgctl infra stop" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_stop_leaves_no_process_and_frees_every_port(stack: Stack) -> None:
    pids = [r["pid"] for r in stack.engines().values()]
    msgctl("infra", "stop", "--home", str(stack.home), timeout=300)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in stack.ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # raises if anything still listens
    assert msgctl("infra", "status", "--home", str(stack.home), check=False).returncode == 3
