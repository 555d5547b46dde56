"""Multi-region topologies without engines running: one Cassandra cluster, MM2, peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from msgctl import topology as topo_mod
from msgctl.errors import UsageError
from msgctl.infra import mirror
from runtime.config import NodeConfig
from tests.infra.test_topology import plan

ROOT = Path(__file__).resolve().parents[2]


def regions(n: int) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "regions" / ("two-region.yaml" if n == 2 else
                                               "three-region.yaml")).read_text())


def test_two_regions_plan_one_cassandra_cluster_and_a_mirror_each(tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, regions(2))}
    east, west = programs["cassandra.us-east"], programs["cassandra.eu-west"]
    assert east.depends_on == [] and west.depends_on == ["cassandra.us-east"]
    assert west.probe_spec["peers"] == 1 and "peers" not in east.probe_spec
    east_yaml = yaml.safe_load((tmp_path / "engines/cassandra.us-east/conf/cassandra.yaml")
                               .read_text())
    west_yaml = yaml.safe_load((tmp_path / "engines/cassandra.eu-west/conf/cassandra.yaml")
                               .read_text())
    seeds = [y["seed_provider"][0]["parameters"][0]["seeds"] for y in (east_yaml, west_yaml)]
    assert seeds == ["127.0.0.1:7000", "127.0.0.1:7000"]
    assert west_yaml["listen_address"] == "127.0.0.2" and west_yaml["auto_bootstrap"] is False
    assert (tmp_path / "engines/cassandra.eu-west/conf/cassandra-rackdc.properties"
            ).read_text().startswith("dc=eu-west")
    for region, peer in (("us-east", "eu-west"), ("eu-west", "us-east")):
        m = programs[f"mirror.{region}"]
        assert m.argv[-2:] == ["--clusters", region]
        assert set(m.depends_on) == {"kafka.us-east", "kafka.eu-west"}
        assert m.probe_spec == {"kind": "mirror", "bootstrap": programs[
            f"kafka.{region}"].endpoint, "topics": [f"{peer}.heartbeats"],
            "sources": {peer: programs[f"kafka.{peer}"].endpoint},
            "security": programs[f"kafka.{region}"].probe_spec["security"]}
        # warmed up as long as its Kafka may be (msgctl.infra.warmup.mirror)
        assert m.warmup_s == programs[f"kafka.{region}"].warmup_s == 120
        props = (tmp_path / f"engines/mirror.{region}/conf/mm2.properties").read_text()
        assert f"{peer}.security.protocol = SSL" in props  # MM2 speaks SSL to every Kafka
    # the Kafka ACLs name every region (a gateway sends to a peer's ingress); the logins
    # and rights of Cassandra are made once the last node joined, through the seed
    assert programs["kafka.eu-west"].probe_spec["acls"] == ["us-east", "eu-west"]
    assert east.probe_spec["setup"] == {"seed": "127.0.0.1", "port": 9042}
    assert west.probe_spec["setup"] == {"seed": "127.0.0.1", "port": 9042,
                                        "keyspace": "msgctl"}
    seq_west = NodeConfig.load(Path(programs["sequencer.eu-west"].argv[-1]))
    assert "sequencer.us-east" in programs["sequencer.eu-west"].depends_on
    assert not any(d.startswith("mirror.") for d in programs["sequencer.eu-west"].depends_on)
    assert seq_west.schema_owner is False
    assert NodeConfig.load(Path(programs["sequencer.us-east"].argv[-1])).schema_owner
    e = seq_west.engines
    assert e.cassandra_dc == "eu-west" and e.cassandra_hosts == ["127.0.0.2"]
    assert e.replication == {"eu-west": 1, "us-east": 1}
    assert e.peer_kafka == {"us-east": "127.0.0.1:9092"}
    assert e.peer_redis == {"us-east": "rediss://127.0.0.1:6379/0"}
    assert e.kafka_tls and e.tls_cert.endswith("client-msgctl-sequencer.pem")


def test_three_regions_join_in_order_and_mirror_every_pair(tmp_path: Path) -> None:
    programs = {p.name: p for p in plan(tmp_path, regions(3))}
    assert programs["cassandra.ap-south"].depends_on == ["cassandra.eu-west"]
    assert programs["cassandra.ap-south"].probe_spec["peers"] == 2
    assert programs["mirror.ap-south"].probe_spec["topics"] == [
        "us-east.heartbeats", "eu-west.heartbeats"]
    props = (tmp_path / "engines/mirror.ap-south/conf/mm2.properties").read_text()
    flows = {line.split(".enabled")[0] for line in props.splitlines() if "->" in line}
    assert len(flows) == 6  # every ordered pair; --clusters picks those into the region
    assert "us-east.consumer.isolation.level = read_committed" in props
    assert (r"topics = msg\.events|msg\.typing|presence\.events|msgctl\.warmup\.mirror"
            in props)


def test_mirror_properties_never_mirror_a_mirrored_topic() -> None:
    import re

    props = mirror.properties({"a": "h1:9092", "b": "h2:9092"})
    pattern = re.compile(props["topics"])
    assert pattern.fullmatch("msg.events") and pattern.fullmatch("presence.events")
    assert pattern.fullmatch("msg.typing")
    assert not pattern.fullmatch("a.msg.events") and not pattern.fullmatch("msg.ingress")
    # the warm-up's (msgctl.infra.warmup.mirror), and not its copies
    assert pattern.fullmatch("msgctl.warmup.mirror")
    assert not pattern.fullmatch("a.msgctl.warmup.mirror")
    assert not pattern.fullmatch("msgctl.warmup.in")


def test_mirror_properties_ask_for_no_offset_syncs() -> None:
    # no group offsets are translated; MM2 refuses a flow (validation) that turns offset
    # syncs off and still sets one of their topic's settings
    props = mirror.properties({"a": "h1:9092", "b": "h2:9092"})
    assert props["emit.offset-syncs.enabled"] == "false"
    assert not [k for k in props if k.startswith("offset-syncs.topic.")], props


def test_regions_must_share_the_cassandra_storage_port(tmp_path: Path) -> None:
    raw = regions(2)
    raw["regions"][1]["engines"]["cassandra"]["storage_port"] = 7001
    with pytest.raises(UsageError, match="same storage_port"):
        topo_mod.parse(raw, str(tmp_path / "t.yaml"))


def test_regions_need_their_own_jmx_port(tmp_path: Path) -> None:
    raw = regions(2)
    raw["regions"][1]["engines"]["cassandra"]["jmx_port"] = 7199
    with pytest.raises(UsageError, match="own jmx_port"):
        topo_mod.parse(raw, str(tmp_path / "t.yaml"))


def test_up_waits_for_the_chain_of_joining_cassandra_nodes(tmp_path: Path) -> None:
    from msgctl.deploy.lifecycle import default_timeout
    from msgctl.infra.programs import ENGINE_START_TIMEOUT

    one = plan(tmp_path / "1", yaml.safe_load((ROOT / "regions/one-region.yaml").read_text()))
    three = plan(tmp_path / "3", regions(3))
    # plus the longest warm-up (msgctl.infra.warmup: 120 s by default, side by side)
    assert default_timeout(one) == 120 + ENGINE_START_TIMEOUT + 120
    # seed, then two nodes that join one after the other
    assert default_timeout(three) == 120 + 3 * ENGINE_START_TIMEOUT + 120
