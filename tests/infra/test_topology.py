"""Cluster topologies without engines running: engine settings, external engines, the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from msgctl import topology as topo_mod
from msgctl.deploy.lifecycle import default_timeout
from msgctl.errors import UsageError
from msgctl.infra import cassandra as cassandra_mod
from runtime.config import NodeConfig
from tests.conftest import msgctl

EXTERNAL = {
    "kafka": {"external": "10.0.0.5:9092,10.0.0.6:9092"},
    "cassandra": {"external": "10.0.0.7,10.0.0.8", "port": 9142, "datacenter": "dc1"},
    "redis": {"external": "redis://10.0.0.9:6379/2"},
}


def cluster(engines: dict[str, Any], processes: int = 2, port: int = 7400) -> dict[str, Any]:
    return {"name": "t", "backend": "cluster", "regions": [{
        "name": "eu", "host": "127.0.0.1", "gateway": {"port": port, "processes": processes},
        "engines": engines}]}


def plan(tmp_path: Path, raw: dict[str, Any], offset: int = 0) -> list[topo_mod.Program]:
    topo = topo_mod.parse(raw, str(tmp_path / "t.yaml"), offset)
    dirs = {k: tmp_path / k for k in ("data", "logs", "config", "run")}
    return topo_mod.plan(topo, "python3", dirs["config"], dirs, "s" * 64, home_root=tmp_path)


def test_external_engines_give_no_engine_program(tmp_path: Path) -> None:
    programs = plan(tmp_path, cluster(EXTERNAL))
    assert [p.name for p in programs] == [
        "sequencer.eu", "presence.eu", "push.eu", "gateway-1.eu", "gateway-2.eu"]
    assert all(p.kind == "runtime" for p in programs)
    assert not (tmp_path / "engines").exists()
    cfg = NodeConfig.load(Path(programs[0].argv[-1]))
    assert cfg.backend == "cluster" and cfg.runtimes == ["sequencer"] and cfg.port == 7410
    assert cfg.engines.kafka_bootstrap == "10.0.0.5:9092,10.0.0.6:9092"
    assert cfg.engines.cassandra_hosts == ["10.0.0.7", "10.0.0.8"]
    assert cfg.engines.cassandra_port == 9142 and cfg.engines.cassandra_dc == "dc1"
    assert cfg.engines.replication == {"dc1": 1}
    assert cfg.engines.redis_url == "redis://10.0.0.9:6379/2"


def test_the_message_path_s_event_loops_run_at_a_higher_cpu_priority(tmp_path: Path) -> None:
    engines = {"kafka": {"port": 9092}, "cassandra": {"port": 9042}, "redis": {"port": 6379}}
    nice = {p.name: p.nice for p in plan(tmp_path, cluster(engines))}
    assert nice["sequencer.eu"] == nice["gateway-1.eu"] == nice["gateway-2.eu"] \
        == nice["cassandra.eu"] == topo_mod.PATH_NICE < 0
    assert {name: n for name, n in nice.items() if n != topo_mod.PATH_NICE} == {
        "kafka.eu": 0, "redis.eu": 0, "presence.eu": 0, "push.eu": 0}
    # regions sharing this machine (any loopback address) keep the default: the
    # cross-region path runs through MirrorMaker 2 and the other region's engines too
    two = {"name": "t", "backend": "cluster", "regions": [
        {"name": n, "host": h, "gateway": {"port": 7400}, "engines": EXTERNAL}
        for n, h in (("eu", "127.0.0.1"), ("us", "127.0.0.2"))]}
    assert {p.nice for p in plan(tmp_path / "2", two)} == {0}
    provisioned = {**two, "regions": [
        {**r, "engines": {**engines, "cassandra": {"port": 9042, "jmx_port": 7199 + i}}}
        for i, r in enumerate(two["regions"])]}
    nice = {p.name: p.nice for p in plan(tmp_path / "p", provisioned)}
    assert {"kafka.us", "cassandra.us"} <= nice.keys() and set(nice.values()) == {0}
    apart = {**two, "regions": [{**r, "host": h} for r, h in
                                zip(two["regions"], ("10.0.0.1", "10.0.0.2"), strict=True)]}
    nice = {p.name: p.nice for p in plan(tmp_path / "h", apart)}
    assert nice["sequencer.us"] == nice["gateway-1.eu"] == topo_mod.PATH_NICE
    # the embedded node has nothing of its own to yield to
    embedded = {"name": "t", "regions": [{"name": "eu", "host": "127.0.0.1",
                                          "gateway": {"port": 7400}}]}
    assert [p.nice for p in plan(tmp_path / "e", embedded)] == [0]


def test_runtime_programs_ports_ids_order_and_probes(tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, cluster(EXTERNAL), offset=100)}
    gw2 = NodeConfig.load(Path(programs["gateway-2.eu"].argv[-1]))
    assert gw2.runtimes == ["gateway"] and gw2.gateway_id == "gateway-2" and gw2.port == 7501
    # the gateways serve TLS (probed over https, trusting the home's CA); the other
    # runtimes' ports answer probes and metrics only, in plain HTTP
    assert programs["gateway-1.eu"].health_url == "https://127.0.0.1:7500/readyz"
    assert programs["push.eu"].health_url == "http://127.0.0.1:7512/readyz"
    assert gw2.tls_cert.endswith("server-gateway-eu.pem") and Path(gw2.tls_cert).is_file()
    assert NodeConfig.load(Path(programs["push.eu"].argv[-1])).tls_cert == ""
    assert programs["presence.eu"].depends_on == ["sequencer.eu"]
    assert programs["gateway-1.eu"].depends_on == programs["gateway-2.eu"].depends_on == [
        "push.eu"]
    spec = programs["gateway-2.eu"].probe_spec
    assert spec["kind"] == "http" and spec["url"] == "https://127.0.0.1:7501/readyz"
    assert spec["ca"].endswith("/tls/ca.pem") and Path(spec["ca"]).is_file()
    assert programs["push.eu"].probe_spec == {
        "kind": "http", "url": "http://127.0.0.1:7512/readyz"}


def test_provisioned_engines_come_first_with_offset_ports(tmp_path: Path) -> None:
    engines = {"kafka": {"external": "k:9092"}, "cassandra": {"port": 9042, "heap_mb": 512},
               "redis": {"port": 6379}}
    programs = plan(tmp_path, cluster(engines, processes=1), offset=1000)
    names = [p.name for p in programs]
    assert names == ["cassandra.eu", "redis.eu", "sequencer.eu", "presence.eu", "push.eu",
                     "gateway-1.eu"]
    cass, red = programs[0], programs[1]
    # TLS is on (the default): the probes log in as msgctl (paths only, no secret), and
    # the last Cassandra node makes the logins and rights through the seed
    me = {"ca": str(tmp_path / "tls" / "ca.pem"),
          "cert": str(tmp_path / "tls" / "client-msgctl-admin.pem"),
          "key": str(tmp_path / "tls" / "client-msgctl-admin.key"),
          "credentials": str(tmp_path / "credentials" / "engines.json"), "identity": "admin"}
    assert cass.kind == "engine" and cass.probe == {
        "kind": "cql", "host": "127.0.0.1", "port": 10042, "datacenter": "eu", "security": me,
        "setup": {"seed": "127.0.0.1", "port": 10042, "keyspace": "msgctl"}}
    assert cass.info["ports"] == {"port": 10042, "storage_port": 8000, "jmx_port": 8199}
    assert "-Xmx512m" in cass.argv and "-Dcassandra.jmx.local.port=8199" in cass.argv
    # the JVMs the runtimes load are warmed up (msgctl.infra.warmup) unless told otherwise
    assert cass.warmup_s == 120 and red.warmup_s == 0
    rackdc = (tmp_path / "engines" / "cassandra.eu" / "conf" / "cassandra-rackdc.properties")
    assert rackdc.read_text() == "dc=eu\nrack=rack1\n"
    conf = yaml.safe_load((rackdc.parent / "cassandra.yaml").read_text())
    assert conf["native_transport_port"] == 10042 and conf["commitlog_sync"] == "group"
    # memtables: tries, cells off the heap
    assert conf["memtable"]["configurations"]["default"] == {"inherits": "trie"}
    assert conf["memtable_allocation_type"] == "offheap_objects"
    assert conf["compaction_throughput"] == "8MiB/s"
    # direct writes where the commit log's file system takes them (this one's does)
    commitlog = tmp_path / "engines" / "cassandra.eu" / "data" / "commitlog"
    assert cassandra_mod.takes_direct_io(commitlog)
    assert conf["commitlog_disk_access_mode"] == "direct"
    assert red.probe == {"kind": "redis", "url": "rediss://127.0.0.1:7379/0", "security": me}
    assert programs[2].depends_on == ["cassandra.eu", "redis.eu"]
    cfg = NodeConfig.load(Path(programs[2].argv[-1]))
    assert cfg.engines.kafka_bootstrap == "k:9092"
    assert cfg.engines.cassandra_hosts == ["127.0.0.1"] and cfg.engines.cassandra_dc == "eu"
    assert cfg.engines.redis_url == "rediss://127.0.0.1:7379/0"
    # the sequencer's identity for the provisioned engines; the external Kafka stays plain
    assert not cfg.engines.kafka_tls and cfg.engines.cassandra_tls
    assert (cfg.engines.cassandra_user, cfg.engines.redis_user) == ("msgctl_sequencer",
                                                                    "msgctl-sequencer")
    assert cfg.engines.tls_cert == str(tmp_path / "tls" / "client-msgctl-sequencer.pem")


@pytest.mark.parametrize(("engines", "message"), [
    ({"kafka": {"port": "x"}}, "regions[0].engines.kafka.port must be an integer port"),
    ({"kafka": {"port": 9092, "bogus": 1}}, "regions[0].engines.kafka: unknown setting(s) bogus"),
    ({"kafka": {"external": "nohost"}}, "'nohost' is not host:port"),
    ({"redis": {"external": "10.0.0.1:6379"}}, "redis.external must be a redis:// URL"),
    ({"cassandra": {"external": "10.0.0.1"}}, "an external cassandra needs 'datacenter'"),
    ({"cassandra": {"heap_mb": 10}}, "cassandra.heap_mb must be an integer from 128"),
    ({"kafka": {"warmup_s": -1}}, "kafka.warmup_s must be a number of seconds from 0 to 600"),
    ({"cassandra": {"warmup_s": "1m"}}, "cassandra.warmup_s must be a number of seconds"),
    ({"redis": {"port": 6379, "warmup_s": 5}}, "redis: unknown setting(s) warmup_s"),
    ({"kafka": {"partitions": 0}}, "kafka.partitions must be an integer from 1 to 256"),
    ({"kafka": {"external": "h:9092", "partitions": "8"}}, "kafka.partitions must be an"),
    ({"redis": {"port": 6379, "partitions": 2}}, "redis: unknown setting(s) partitions"),
    ({"kafka": {"txn_interval_ms": -1}}, "kafka.txn_interval_ms must be an integer from 0 to"),
    ({"kafka": {"external": "h:9092", "txn_interval_ms": 2.5}}, "kafka.txn_interval_ms must"),
    ({"cassandra": {"txn_interval_ms": 8}}, "cassandra: unknown setting(s) txn_interval_ms"),
    ({"cassandra": {"port": 9092}}, "cassandra and kafka both use port 9092"),
    ({"kafka": None, "redis": {"port": 70000}}, "redis.port: port 70000 is out of range"),
])
def test_bad_engine_settings_are_one_line(tmp_path: Path, engines: dict[str, Any],
                                          message: str) -> None:
    full = {"kafka": {}, "cassandra": {}, "redis": {}} | engines
    with pytest.raises(UsageError, match=".*") as err:
        plan(tmp_path, cluster(full))
    assert message in err.value.message and "\n" not in err.value.message


def test_warmup_s_bounds_each_jvms_warm_up(tmp_path: Path) -> None:
    engines = {"kafka": {"warmup_s": 5}, "cassandra": {"warmup_s": 7.5}, "redis": {}}
    programs = {p.name: p for p in plan(tmp_path, cluster(engines, processes=1))}
    assert programs["kafka.eu"].warmup_s == 5 and programs["cassandra.eu"].warmup_s == 7.5
    assert programs["redis.eu"].warmup_s == 0
    # `up` waits for the longest warm-up (they run side by side) on top of the engines'
    # start deadlines
    others = [p for p in programs.values() if p.name != "cassandra.eu"]
    assert default_timeout(list(programs.values())) - default_timeout(others) == 2.5


def test_kafka_partitions_reach_the_broker_and_the_runtimes(tmp_path: Path) -> None:
    """`engines.kafka.partitions`: of the topics msgctl creates (by the sequencer, and the
    broker's default); 1 unless told."""
    for engines, want in (({"kafka": {}, "cassandra": {}, "redis": {}}, 1),
                          ({"kafka": {"partitions": 6}, "cassandra": {}, "redis": {}}, 6)):
        home = tmp_path / str(want)
        programs = {p.name: p for p in plan(home, cluster(engines, processes=1))}
        conf = home / "engines" / "kafka.eu" / "conf" / "server.properties"
        assert f"num.partitions={want}\n" in conf.read_text()
        cfg = NodeConfig.load(Path(programs["sequencer.eu"].argv[-1]))
        assert cfg.engines.partitions == want
    external = {"kafka": {"external": "k:9092", "partitions": 12}, "cassandra": {},
                "redis": {}}
    programs = {p.name: p for p in plan(tmp_path / "ext", cluster(external, processes=1))}
    assert NodeConfig.load(Path(programs["sequencer.eu"].argv[-1])).engines.partitions == 12


def test_kafka_txn_interval_reaches_the_sequencer(tmp_path: Path) -> None:
    """`engines.kafka.txn_interval_ms`: the least time between two sequencer transactions;
    8 unless told, 0 turns the wait off."""
    for engines, want in (({"kafka": {}, "cassandra": {}, "redis": {}}, 8),
                          ({"kafka": {"txn_interval_ms": 0}, "cassandra": {}, "redis": {}}, 0),
                          ({"kafka": {"external": "k:9092", "txn_interval_ms": 20},
                            "cassandra": {}, "redis": {}}, 20)):
        home = tmp_path / str(want)
        programs = {p.name: p for p in plan(home, cluster(engines, processes=1))}
        for name in ("sequencer.eu", "gateway-1.eu"):
            cfg = NodeConfig.load(Path(programs[name].argv[-1]))
            assert cfg.engines.txn_interval_ms == want


def test_engine_jvms_log_collections_and_kafka_runs_the_parallel_collector(
        tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, cluster(
        {"kafka": {}, "cassandra": {}, "redis": {}}, processes=1))}
    for name in ("kafka.eu", "cassandra.eu"):
        logs = tmp_path / "engines" / name / "logs"
        assert [a for a in programs[name].argv if a.startswith("-Xlog")] == [
            f"-Xlog:gc:file=\"{logs / 'gc.log'}\":time,uptime:filecount=5,filesize=10m"]
    broker = programs["kafka.eu"]
    assert "-XX:+UseParallelGC" in broker.argv and "-XX:+UseG1GC" not in broker.argv
    cassandra = programs["cassandra.eu"].argv
    # G1 sizes Cassandra's young generation for its pause goal: no fixed size
    assert "-XX:+UseG1GC" in cassandra and "-XX:MaxGCPauseMillis=20" in cassandra
    assert not any(a.startswith("-Xmn") for a in cassandra)
    # the one-shot storage format logs no collections (its gc.log would rotate the
    # broker's aside)
    assert broker.prepare and not any(a.startswith("-Xlog") for a in broker.prepare)


def test_only_cassandra_runs_with_more_timer_slack(tmp_path: Path) -> None:
    programs = plan(tmp_path, cluster({"kafka": {}, "cassandra": {}, "redis": {}}))
    slack = {p.name: p.timer_slack_us for p in programs}
    assert slack.pop("cassandra.eu") == cassandra_mod.TIMER_SLACK_US > 50  # the default
    assert set(slack.values()) == {0}


def test_missing_engine_and_embedded_misuse(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'redis' is missing"):
        plan(tmp_path, cluster({"kafka": {}, "cassandra": {}}))
    embedded = cluster({}) | {"backend": "embedded"}
    with pytest.raises(UsageError, match="needs backend: cluster"):
        plan(tmp_path, embedded)


def test_cli_reports_a_bad_engine_setting_in_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = cluster({"kafka": {"port": 9092, "heap": 1}, "cassandra": {}, "redis": {}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    for args in (("up", "--home", str(tmp_path / "h")), ("infra", "fetch"),
                 ("infra", "start", "--home", str(tmp_path / "h"))):
        proc = msgctl(*args, "-t", str(path), check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == ("msgctl: bad.yaml: regions[0].engines.kafka: unknown "
                                       "setting(s) heap; known: controller_port, external, "
                                       "heap_mb, partitions, port, txn_interval_ms, version, "
                                       "warmup_s")
    assert not (tmp_path / "h" / "run" / "supervisor.pid").exists()


def test_one_region_yaml_parses_as_documented() -> None:
    topo = topo_mod.load("regions/one-region.yaml")
    (region,) = topo.regions
    assert topo.backend == "cluster" and region.gateway_processes == 2
    ports = dict((what, port) for port, what in region.ports())
    assert ports == {"gateway-1": 7400, "gateway-2": 7401, "sequencer": 7410,
                     "presence": 7411, "push": 7412, "kafka": 9092,
                     "kafka controller": 9093, "cassandra": 9042,
                     "cassandra storage": 7000, "cassandra jmx": 7199, "redis": 6379,
                     "s3": 9000, "media gateway-1": 7420, "media gateway-2": 7421}
    out = json.loads(topo_mod.to_json(topo))["regions"][0]
    assert out["gateway_urls"] == ["wss://127.0.0.1:7400/v1/ws", "wss://127.0.0.1:7401/v1/ws"]


def test_doctor_checks_engine_prerequisites_for_a_cluster_topology() -> None:
    proc = msgctl("doctor", "-t", "regions/one-region.yaml", "--port-offset", "31000", "--json",
                  check=False)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["java"]["result"] == "ok" and "17" in checks["java"]["detail"]
    assert checks["redis-server"]["result"] == "ok"
    assert "port 127.0.0.1:40042 (cassandra)" in checks
    embedded = {c["check"] for c in json.loads(msgctl("doctor", "--json",
                                                      check=False).stdout)["checks"]}
    assert "java" not in embedded and "redis-server" not in embedded


S3_EXTERNAL = {"external": "https://s3.eu-west-1.amazonaws.com/", "access_key": "AKIA1",
               "secret_key": "sk", "bucket": "media-eu", "region": "eu-west-1"}


def test_external_s3_reaches_the_gateways_only_with_media_ports(tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, cluster(EXTERNAL | {"s3": S3_EXTERNAL}))}
    assert "s3.eu" not in programs
    gw1 = NodeConfig.load(Path(programs["gateway-1.eu"].argv[-1]))
    gw2 = NodeConfig.load(Path(programs["gateway-2.eu"].argv[-1]))
    assert (gw1.media.port, gw2.media.port) == (7420, 7421)  # gateway port + 20 + N-1
    e = gw2.engines
    assert (e.s3_endpoint, e.s3_access_key, e.s3_secret_key, e.s3_bucket, e.s3_region) == (
        "https://s3.eu-west-1.amazonaws.com", "AKIA1", "sk", "media-eu", "eu-west-1")
    assert NodeConfig.load(Path(programs["sequencer.eu"].argv[-1])).media.port == 0


def test_without_s3_the_cluster_has_no_media_port(tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, cluster(EXTERNAL))}
    gw1 = NodeConfig.load(Path(programs["gateway-1.eu"].argv[-1]))
    assert gw1.media.port == 0 and gw1.engines.s3_endpoint == ""


def test_provisioned_s3proxy_program_and_generated_credentials(tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, cluster(
        EXTERNAL | {"s3": {"port": 9100}}))}
    s3 = programs["s3.eu"]
    conf = tmp_path / "engines" / "s3.eu" / "conf"
    creds = json.loads((conf / "credentials.json").read_text())
    # https only (engine TLS, on by default), its certificate checked against the CA
    assert s3.probe_spec == {"kind": "s3", "endpoint": "https://127.0.0.1:9100",
                             "credentials": str(conf / "credentials.json"),
                             "ca": str(tmp_path / "tls" / "ca.pem")}
    assert "org.gaul.s3proxy.Main" in s3.argv
    props = (conf / "s3proxy.properties").read_text()
    assert "s3proxy.authorization=aws-v2-or-v4" in props
    assert "jclouds.provider=filesystem" in props
    assert f"jclouds.filesystem.basedir={tmp_path / 'engines' / 's3.eu' / 'data'}" in props
    assert f"s3proxy.credential={creds['credential']}" in props
    assert "s3proxy.secure-endpoint=https://127.0.0.1:9100" in props
    assert "s3proxy.endpoint=" not in props  # no plain http listener
    assert (conf / "keystore.p12").stat().st_mode & 0o077 == 0
    gw = NodeConfig.load(Path(programs["gateway-1.eu"].argv[-1]))
    assert (gw.engines.s3_endpoint, gw.engines.s3_access_key, gw.engines.s3_secret_key) == (
        "https://127.0.0.1:9100", creds["identity"], creds["credential"])
    assert gw.engines.tls_ca == str(tmp_path / "tls" / "ca.pem")
    # a second plan (down, up) keeps the same credentials
    again = {p.name: p for p in plan(tmp_path, cluster(EXTERNAL | {"s3": {"port": 9100}}))}
    gw_again = NodeConfig.load(Path(again["gateway-1.eu"].argv[-1]))
    assert gw_again.engines.s3_secret_key == creds["credential"]


@pytest.mark.parametrize(("s3", "needle"), [
    ({"external": "s3.amazonaws.com", "access_key": "a", "secret_key": "b"}, "http(s)://"),
    ({"external": "http://h:9000", "access_key": "a"}, "needs secret_key"),
    ({"external": "http://h:9000", "access_key": "a", "secret_key": "b", "acl": "x"},
     "unknown setting(s) acl"),
    ({"port": 9100, "bucket": "x"}, "unknown setting(s) bucket"),
])
def test_s3_mistakes_are_one_line(tmp_path: Path, s3: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match="engines.s3") as err:
        plan(tmp_path, cluster(EXTERNAL | {"s3": s3}))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_media_ports_of_the_gateways_must_not_collide(tmp_path: Path) -> None:
    raw = cluster(EXTERNAL | {"s3": S3_EXTERNAL}, processes=2)
    raw["media"] = {"port": 7401}
    with pytest.raises(UsageError, match="both use port 7401"):
        plan(tmp_path, raw)


def test_external_engines_carry_their_own_ca_and_login(tmp_path: Path) -> None:
    ca = tmp_path / "their-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    engines = {
        "kafka": {"external": "10.0.0.5:9093", "ca": str(ca)},
        "cassandra": {"external": "10.0.0.7", "datacenter": "dc1", "username": "app",
                      "password": "pw", "ca": str(ca)},
        "redis": {"external": "rediss://u:p@10.0.0.9:6380/0"},
        "s3": {"external": "https://s3.example.com", "access_key": "a", "secret_key": "b"}}
    programs = {p.name: p for p in plan(tmp_path, cluster(engines))}
    e = NodeConfig.load(Path(programs["gateway-1.eu"].argv[-1])).engines
    assert e.kafka_tls and e.cassandra_tls
    assert (e.cassandra_user, e.cassandra_password) == ("app", "pw")
    # their own CA, or the system's roots: never the deployment's CA, which did not sign them
    assert e.engine_ca == {"kafka": str(ca), "cassandra": str(ca), "redis": "", "s3": ""}
    assert e.redis_url == "rediss://u:p@10.0.0.9:6380/0" and e.redis_user == ""


@pytest.mark.parametrize(("setting", "message"), [
    ({"ca": "/no/such/ca.pem"}, "cassandra.ca: no such file /no/such/ca.pem"),
    ({"username": "app"}, "username and password go together"),
    ({"username": "app", "password": 3}, "username and password go together"),
])
def test_external_engine_security_mistakes_are_one_line(
        tmp_path: Path, setting: dict[str, Any], message: str) -> None:
    engines = dict(EXTERNAL, cassandra={**EXTERNAL["cassandra"], **setting})
    with pytest.raises(UsageError, match=message):
        topo_mod.parse(cluster(engines), str(tmp_path / "t.yaml"), 0)


def test_cassandra_keeps_the_memory_mapped_commit_log_where_o_direct_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cassandra's own `auto` would pick direct writes there and fail to start."""
    real_open = cassandra_mod.os.open

    def refuse_direct(path: Any, flags: int, *args: Any) -> int:
        if flags & getattr(cassandra_mod.os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(cassandra_mod.os, "open", refuse_direct)
    path = cassandra_mod.write_config(tmp_path / "conf", tmp_path / "data", "127.0.0.1",
                                      9042, 7000, "dc1")
    assert yaml.safe_load(path.read_text())["commitlog_disk_access_mode"] == "legacy"
    assert list((tmp_path / "data" / "commitlog").iterdir()) == []  # no probe left behind
