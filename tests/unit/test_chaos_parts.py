"""The pure parts of chaos/: units, selectors, fault specs, rule text, toxics, drill files,
and the topology's chaos section (no privileges, no deployment)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from chaos import drill, faults, netfilter, select, toxics, units
from chaos.faults import FaultError, FaultSpec
from chaos.netfilter import Redirect, RegionNet
from msgctl import topology
from msgctl.errors import UsageError

REGIONS = [RegionNet("us-east", "127.0.0.1", 0), RegionNet("eu-west", "127.0.0.2", 1),
           RegionNet("ap-south", "127.0.0.3", 2)]


# -- units ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [("60s", 60), ("300ms", 0.3), ("2m", 120),
                                               ("1h", 3600), ("1.5s", 1.5), (7, 7), ("0", 0)])
def test_durations(text: str | int, value: float) -> None:
    assert units.seconds(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "fast", "10 parsecs", "-1s", True, "1d"])
def test_bad_durations_say_what_is_expected(text: object) -> None:
    with pytest.raises(units.UnitError, match="duration like 60s"):
        units.seconds(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "bps"), [("256kbit", 32_000), ("1mbit", 125_000),
                                            ("64kb", 64_000), ("8bit", 1), (100, 100)])
def test_rates(text: str | int, bps: float) -> None:
    assert units.bytes_per_second(text) == pytest.approx(bps)


def test_bad_rates() -> None:
    for text in ("0kbit", "lots", "-5kbit"):
        with pytest.raises(units.UnitError):
            units.bytes_per_second(text)


# -- selectors --------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "n", "k"), [("one", 5, 1), ("minority", 5, 2),
                                              ("majority", 5, 3), ("all", 5, 5),
                                              ("minority", 1, 0), ("majority", 2, 2),
                                              ("minority", 2, 1), ("one", 0, 0)])
def test_selector_counts_follow_jepsen(mode: str, n: int, k: int) -> None:
    assert select.count(mode, n) == k


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=12, unique=True),
       st.sampled_from(select.MODES), st.integers(0, 10_000))
def test_a_seed_picks_the_same_targets_in_their_order(targets: list[str], mode: str,
                                                      seed: int) -> None:
    first = select.pick(targets, mode, seed)
    assert first == select.pick(targets, mode, seed)
    assert len(first) == select.count(mode, len(targets))
    assert [t for t in targets if t in first] == first


def test_unknown_selector() -> None:
    with pytest.raises(ValueError, match="unknown selector"):
        select.count("half", 3)


# -- fault specs ------------------------------------------------------------------------------
def checked(spec: FaultSpec, multi: bool = True, regions: list[RegionNet] = REGIONS) -> FaultSpec:
    faults.check(spec, regions, multi_region_cluster=multi)
    return spec


def test_partition_cuts_both_ways_and_one_way_only_one() -> None:
    spec = checked(FaultSpec("partition", ["us-east", "eu-west"], 30))
    assert [(a.name, b.name) for a, b in faults.cuts(spec, REGIONS)] == [
        ("us-east", "eu-west"), ("eu-west", "us-east")]
    spec = checked(FaultSpec("partition", ["us-east", "eu-west"], 30, {"one_way": True}))
    assert [(a.name, b.name) for a, b in faults.cuts(spec, REGIONS)] == [("us-east", "eu-west")]
    assert faults.describe(spec) == "partition us-east -> eu-west"


def test_isolate_cuts_a_region_from_every_other() -> None:
    spec = checked(FaultSpec("isolate", ["eu-west"], 30))
    pairs = {(a.name, b.name) for a, b in faults.cuts(spec, REGIONS)}
    assert pairs == {("eu-west", "us-east"), ("eu-west", "ap-south"), ("us-east", "eu-west"),
                     ("ap-south", "eu-west")}


@pytest.mark.parametrize(("spec", "message", "code"), [
    (FaultSpec("partition", ["us-east", "mars"], 30), "unknown region 'mars'", 2),
    (FaultSpec("partition", ["us-east"], 30), "takes 2 regions", 2),
    (FaultSpec("partition", ["us-east", "us-east"], 30), "two different regions", 2),
    (FaultSpec("isolate", ["us-east", "eu-west"], 30), "takes 1 region", 2),
    (FaultSpec("link", ["us-east", "eu-west"], 30), "at least one of --latency", 2),
    (FaultSpec("pause", ["kafka.*"], 0), "more than 0", 2),
    (FaultSpec("pause", ["kafka.*"], 90_000), "at most 24h", 2),
    (FaultSpec("kill", ["x"], None, {"signal": "STOP"}), "msgctl chaos pause", 2),
    (FaultSpec("kill", ["x"], None, {"signal": "BOGUS"}), "unknown signal", 2),
    (FaultSpec("kill", ["x"], None, {"select": "half"}), "unknown selector", 2),
    (FaultSpec("flood", ["x"], 10), "unknown fault", 2),
])
def test_bad_faults_are_one_line_with_an_exit_code(spec: FaultSpec, message: str,
                                                   code: int) -> None:
    with pytest.raises(FaultError, match=message) as err:
        checked(spec)
    assert err.value.code == code


def test_network_faults_need_a_multi_region_cluster_and_own_addresses() -> None:
    with pytest.raises(FaultError, match="at least two regions"):
        checked(FaultSpec("partition", ["us-east", "eu-west"], 30), multi=False)
    shared = [RegionNet("a", "127.0.0.1", 0), RegionNet("b", "127.0.0.1", 1)]
    with pytest.raises(FaultError, match="share the address"):
        checked(FaultSpec("partition", ["a", "b"], 30), regions=shared)


def test_kill_is_instantaneous_and_takes_a_signal_by_name() -> None:
    spec = checked(FaultSpec("kill", ["sequencer.*"], 60, {"signal": "term"}))
    assert spec.duration is None and spec.options["signal"] == signal.SIGTERM
    assert faults.describe(spec) == "kill -TERM sequencer.*"


# -- rule text ----------------------------------------------------------------------------------
def test_base_rules_mark_each_region_and_redirect_links_to_the_proxy() -> None:
    text = netfilter.base_rules("abc123", REGIONS[:2], [
        Redirect("us-east", "127.0.0.2", 9092, "127.0.0.1", 8475)])
    assert "-I OUTPUT 1 -j MSGCTL-abc123" in text
    assert ("-A MSGCTL-abc123 -m cgroup --path msgctl/abc123/eu-west -m conntrack --ctdir "
            "ORIGINAL -j CONNMARK --set-xmark 0x2000000/0x7f000000") in text
    assert ("-m cgroup --path msgctl/abc123/us-east/programs -p tcp -d 127.0.0.2/32 --dport "
            "9092 -j DNAT --to-destination 127.0.0.1:8475") in text
    assert text.count("COMMIT") == 2
    assert "*nat" not in netfilter.base_rules("abc123", REGIONS[:2])


def test_a_cut_drops_what_a_sends_to_b_both_as_initiator_and_as_server() -> None:
    text = netfilter.cut_rules("abc123", "f7", [(REGIONS[0], REGIONS[1])])
    lines = text.splitlines()
    assert ":MSGCTL-abc123-f7 - [0:0]" in lines
    assert ("-A MSGCTL-abc123-f7 -m cgroup --path msgctl/abc123/us-east -m conntrack --ctdir "
            "ORIGINAL --ctorigdst 127.0.0.2/32 -j DROP") in lines
    assert ("-A MSGCTL-abc123-f7 -m cgroup --path msgctl/abc123/us-east -m conntrack --ctdir "
            "REPLY -m connmark --mark 0x2000000/0x7f000000 -j DROP") in lines
    assert lines[-2:] == ["-A MSGCTL-abc123 -j MSGCTL-abc123-f7", "COMMIT"]
    assert "eu-west" not in text.replace("0x2000000", "")  # nothing dropped the other way


def test_chain_names_fit_iptables() -> None:
    assert len(netfilter.fault_chain("abcdef12", "f99999")) <= 28
    with pytest.raises(ValueError):
        netfilter.fault_chain("abcdef12", "f" + "9" * 20)


# -- toxics -------------------------------------------------------------------------------------
def test_a_slow_link_is_latency_on_both_streams() -> None:
    got = toxics.toxics("f3", latency_ms=300, jitter_ms=50)
    assert {(t.type, t.stream) for t in got} == {("latency", "upstream"),
                                                 ("latency", "downstream")}
    assert all(t.attributes == {"latency": 300, "jitter": 50} and t.name.startswith("f3-")
               for t in got)
    kinds = {t.type for t in toxics.toxics("f4", bandwidth_kbs=32, reset=True, blackhole=True)}
    assert kinds == {"bandwidth", "reset_peer", "timeout"}


# -- drill files --------------------------------------------------------------------------------
def test_every_bundled_drill_parses_and_resolves_on_two_regions() -> None:
    names = drill.bundled()
    assert {"partition", "kill-sequencer", "kafka-restart", "cassandra-dc-down",
            "mirror-stall", "slow-link", "gateway-kill", "reconnect-storm"} <= set(names)
    for name in names:
        d = drill.load(name).resolve(["us-east", "eu-west"])
        assert d.traffic.duration > 0 and d.description
        for f in d.faults:
            assert "{r" not in repr(f.args), f
            assert f.at < d.traffic.duration


def test_partition_drill_resolves_its_regions() -> None:
    d = drill.load("partition").resolve(["us-east", "eu-west", "ap-south"])
    assert d.faults[0].kind == "partition" and d.faults[0].args["regions"] == ["us-east",
                                                                              "eu-west"]
    assert d.faults[0].duration == 60 and d.needs_network


def test_a_drill_needing_more_regions_says_so() -> None:
    with pytest.raises(drill.DrillError, match=r"\{r1\} but the deployment has 1 region"):
        drill.load("partition").resolve(["local"])


def test_unknown_drill_names_the_bundled_ones() -> None:
    with pytest.raises(drill.DrillError, match="no drill 'nope'; bundled: .*partition"):
        drill.load("nope")


def test_a_bad_drill_file_is_one_line_per_error_with_its_key_path(tmp_path: Path) -> None:
    raw = {"traffic": {"duration": "forever", "rate": -1, "conversations": [{"kind": "trio"}]},
           "faults": [{"at": "5s", "fault": {"partition": ["{r0}"]}, "duration": "10s"},
                      {"at": "1s", "fault": {"meteor": "x"}},
                      {"at": "2s", "fault": {"kill": "sequencer.*"}, "duration": "3s"}],
           "colour": "red"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(drill.DrillError) as err:
        drill.load(str(path))
    problems = err.value.problems
    expected = ["bad.yaml: colour: unknown key", "bad.yaml: traffic.duration:",
                "bad.yaml: traffic.rate:", "bad.yaml: traffic.conversations[0].kind:",
                "bad.yaml: faults[0].fault.partition.regions:",
                "bad.yaml: faults[1].fault: unknown fault 'meteor'",
                "bad.yaml: faults[2].duration: kill is instantaneous"]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert all("\n" not in p for p in problems)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("faults: [\n")
    with pytest.raises(drill.DrillError, match="not valid YAML at line"):
        drill.load(str(path))


# -- the topology's chaos section ------------------------------------------------------------
def two_regions(**chaos: object) -> topology.Topology:
    raw = yaml.safe_load((topology.PROJECT_ROOT / "regions/two-region.yaml").read_text())
    if chaos:
        raw["chaos"] = chaos
    return topology.parse(raw, "two-region.yaml")


def test_each_region_proxies_the_peer_ports_its_programs_connect_to() -> None:
    topo = two_regions()
    assert topo.chaos.link_proxy == "auto" and topo.chaos.proxy_port == 8474
    proxies = topology.link_proxies(topo.backend, topo.regions, topo.chaos)
    east = {(p.what, p.upstream_host, p.upstream_port, p.listen_host, p.listen_port)
            for p in proxies["us-east"]}
    assert east == {("kafka", "127.0.0.2", 9092, "127.0.0.1", 8475),
                    ("cassandra", "127.0.0.2", 7000, "127.0.0.1", 8476),
                    ("redis", "127.0.0.2", 6379, "127.0.0.1", 8477)}
    assert {p.target for p in proxies["eu-west"]} == {"us-east"}


def test_link_proxy_off_and_one_region_have_no_proxies() -> None:
    topo = two_regions(link_proxy="off")
    assert topology.link_proxies(topo.backend, topo.regions, topo.chaos) == {}
    one = topology.load("regions/one-region.yaml")
    assert topology.link_proxies(one.backend, one.regions, one.chaos) == {}


@pytest.mark.parametrize(("chaos", "message"), [
    ({"link_proxy": "maybe"}, "link_proxy must be one of auto, on, off"),
    ({"proxy_port": "x"}, "proxy_port must be an integer"),
    ({"proxy_port": 9090}, "needs port 9092 \\(kafka uses it\\)"),
    ({"colour": 1}, "unknown setting"),
])
def test_bad_chaos_sections(chaos: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        two_regions(**chaos)


def test_a_bare_yaml_on_is_on() -> None:
    assert two_regions(link_proxy=True).chaos.link_proxy == "on"
