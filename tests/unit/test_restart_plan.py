"""What `msgctl restart` takes along and how long it waits: an engine's dependents in its
region, and the programs' own stop and readiness timeouts (`msgctl.supervisor.program`)."""

from __future__ import annotations

from pathlib import Path

from msgctl import topology as topo_mod
from msgctl.infra.programs import ENGINE_START_TIMEOUT
from msgctl.supervisor.daemon import START_TIMEOUT, STOP_TIMEOUT
from msgctl.supervisor.program import (
    ENGINE,
    Program,
    engine_dependents,
    match,
    restart_wait,
)
from tests.conftest import write_regions_topology


def prog(name: str, kind: str = "runtime", deps: tuple[str, ...] = (),
         start: float | None = None) -> Program:
    unit, region = name.split(".")
    return Program(name=name, region=region, runtimes=[unit], argv=["true"], health_url="",
                   endpoint="", depends_on=list(deps), kind=kind, start_timeout=start)


def two_regions(tmp_path: Path) -> list[Program]:
    """The plan `msgctl up` makes of a real two-region topology."""
    topo = topo_mod.load(str(write_regions_topology(tmp_path / "t.yaml", 20000)))
    return topo_mod.plan(topo, "python", tmp_path / "config",
                         {"data": tmp_path / "data", "logs": tmp_path / "logs"}, "s",
                         home_root=tmp_path)


def test_an_engines_dependents_are_the_runtimes_of_its_region(tmp_path: Path) -> None:
    programs = two_regions(tmp_path)
    east = ["sequencer.us-east", "presence.us-east", "push.us-east", "gateway-1.us-east"]
    west = ["sequencer.eu-west", "presence.eu-west", "push.eu-west", "gateway-1.eu-west"]
    for engine in ("kafka.us-east", "redis.us-east", "cassandra.us-east"):
        assert engine_dependents(programs, [engine]) == east, engine
    # the joining Cassandra node and the other region's sequencer waited only for the
    # first start: they stay up
    assert engine_dependents(programs, ["kafka.eu-west"]) == west
    both = engine_dependents(programs, match(programs, "kafka*"))
    assert both == east + west
    # what restarts anyway is not listed twice; a runtime takes nothing along
    assert engine_dependents(programs, ["kafka.us-east", "sequencer.us-east"]) == east[1:]
    assert engine_dependents(programs, ["sequencer.us-east"]) == []


def test_embedded_has_no_dependents() -> None:
    node = prog("node.local")
    assert engine_dependents([node], ["node.local"]) == []


def test_the_wait_follows_each_programs_own_timeouts() -> None:
    kafka = prog("kafka.r", ENGINE, start=ENGINE_START_TIMEOUT)
    seq = prog("sequencer.r", deps=("kafka.r",))
    programs = [kafka, seq]
    only_runtime = restart_wait(programs, ["sequencer.r"], START_TIMEOUT, STOP_TIMEOUT)
    assert only_runtime >= START_TIMEOUT + STOP_TIMEOUT
    wait = restart_wait(programs, ["kafka.r", *engine_dependents(programs, ["kafka.r"])],
                        START_TIMEOUT, STOP_TIMEOUT)
    # the control socket's old fixed 120 s gave up while the engine was still starting
    assert wait > ENGINE_START_TIMEOUT + START_TIMEOUT > 120
    assert restart_wait(programs, [], START_TIMEOUT, STOP_TIMEOUT) > 0


def test_match_is_on_programs_and_the_runtimes_they_host() -> None:
    node = Program(name="node.local", region="local",
                   runtimes=["sequencer", "presence", "push", "gateway"], argv=[],
                   health_url="", endpoint="")
    assert match([node], "gateway*") == ["node.local"]
    assert match([node], "node.*") == ["node.local"]
    assert match([node], "kafka*") == []


def test_a_bare_name_means_that_name_in_every_region() -> None:
    def prog(name: str, region: str, runtimes: list[str]) -> Program:
        return Program(name=f"{name}.{region}", region=region, runtimes=runtimes, argv=[],
                       health_url="", endpoint="")

    programs = [prog("kafka", "east", []), prog("sequencer", "east", ["sequencer"]),
                prog("gateway-1", "east", ["gateway"]), prog("gateway-2", "east", ["gateway"]),
                prog("sequencer", "west", ["sequencer"])]
    assert match(programs, "sequencer") == ["sequencer.east", "sequencer.west"]
    assert match(programs, "gateway") == ["gateway-1.east", "gateway-2.east"]
    assert match(programs, "kafka") == ["kafka.east"]
    # a name with a region, or a glob, is taken as written
    assert match(programs, "sequencer.west") == ["sequencer.west"]
    assert match(programs, "sequencer?") == []
    assert match(programs, "seq") == []


def test_restart_waits_as_long_as_the_plan_of_the_home_says(tmp_path: Path) -> None:
    """`msgctl restart` no longer gives up at the control socket's 120 s while an engine
    still has time left to pass its probe."""
    from msgctl.cli.lifecycle import _restart_wait
    from msgctl.home import Home, write_json_atomic

    home = Home(tmp_path / "home").ensure()
    programs = two_regions(tmp_path)
    write_json_atomic(home.plan_file, {"programs": [p.to_dict() for p in programs]})
    engine = _restart_wait(home, "cassandra.us-east", with_dependents=False)
    assert engine >= ENGINE_START_TIMEOUT + 60  # its readiness deadline and its stop timeout
    both = _restart_wait(home, "cassandra.us-east", with_dependents=True)
    assert both >= engine + 4 * (START_TIMEOUT + STOP_TIMEOUT)  # three runtimes, a gateway
    assert _restart_wait(Home(tmp_path / "no-plan"), "x*", False) == 120.0
