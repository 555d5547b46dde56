"""Network faults on two real regions (us-east 127.0.0.1, eu-west 127.0.0.2, real Kafka,
Cassandra, Redis, MirrorMaker 2, a Toxiproxy per region): the programs run in their regions'
cgroups, a partition drill keeps every acknowledged message, a link fault goes through the
proxy, and after each test the firewall is as it was and no toxic is left."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import netfilter
from chaos.host import deployment_id
from tests.chaos.conftest import require_root
from tests.chaos.drills import records, run, shortened
from tests.conftest import Regions, msgctl, start_regions
from tests.wsclient import Client

# the module's two-region stack starts inside the first test's time (about 2 min)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EAST, WEST = "us-east", "eu-west"


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    require_root()
    before = netfilter.snapshot()
    dep = start_regions(tmp_path_factory.mktemp("chaos-regions"), 2)
    yield dep
    msgctl("down", "--home", str(dep.home), check=False, timeout=300)
    # down took the deployment's chains and cgroups away with it
    assert netfilter.snapshot() == before
    assert not Path(f"/sys/fs/cgroup/unified/msgctl/{deployment_id(dep.home)}").exists()


def proxies(dep: Regions) -> dict[str, dict]:
    """Every Toxiproxy's proxies, by region."""
    out = {}
    plan = json.loads((dep.home / "run" / "plan.json").read_text())["chaos"]
    for region, entry in plan["proxies"].items():
        with urllib.request.urlopen(f"{entry['api']}/proxies", timeout=5) as resp:
            out[region] = json.loads(resp.read())
    return out


@pytest.fixture(autouse=True)
def no_toxic_left(regions: Regions) -> Iterator[None]:
    yield
    for region, listing in proxies(regions).items():
        for name, proxy in listing.items():
            assert proxy["toxics"] == [], (region, name, proxy["toxics"])
    assert json.loads(msgctl("chaos", "status", "--json", "--home",
                             str(regions.home)).stdout)["faults"] == []
    for row in regions.status()["runtimes"]:  # nothing left paused (SIGSTOP)
        stat = Path(f"/proc/{row['pid']}/stat").read_text()
        assert stat.rsplit(")", 1)[1].split()[0] != "T", row["program"]


def test_each_region_runs_in_its_cgroup_behind_its_link_proxy(regions: Regions) -> None:
    dep = regions
    status = json.loads(msgctl("chaos", "status", "--json", "--home", str(dep.home)).stdout)
    assert status["network"] == "on" and status["link_proxy"] == "on", status
    ident = deployment_id(dep.home)
    for row in dep.status()["runtimes"]:
        cgroup = Path(f"/proc/{row['pid']}/cgroup").read_text()
        if row["program"].startswith("agent."):  # the control plane is never cut off
            assert f"/msgctl/{ident}/" not in cgroup, (row["program"], cgroup)
            continue
        role = "proxy" if row["program"].startswith("toxiproxy.") else "programs"
        assert f"/msgctl/{ident}/{row['region']}/{role}" in cgroup, (row["program"], cgroup)
    listing = proxies(dep)
    assert set(listing[EAST]) == {f"{WEST}-kafka", f"{WEST}-cassandra", f"{WEST}-redis"}
    rules = netfilter.snapshot()
    assert f"-A OUTPUT -j MSGCTL-{ident}" in rules and "DNAT" in rules


def test_each_region_is_operated_through_its_agent(regions: Regions) -> None:
    dep = regions
    agents = json.loads(msgctl("agent", "list", "--json", "--home", str(dep.home)).stdout)
    assert [(a["region"], a["state"]) for a in agents] == [(EAST, "up"), (WEST, "up")]
    report = dep.status()
    assert [a["state"] for a in report["agents"]] == ["up", "up"]
    # the whole stack, both regions, as the agents report it
    programs = {r["program"] for r in report["runtimes"]}
    assert {f"kafka.{EAST}", f"kafka.{WEST}", f"agent.{EAST}", f"agent.{WEST}"} <= programs
    lines = msgctl("logs", "kafka*", "--region", WEST, "-n", "5", "--json", "--home",
                   str(dep.home)).stdout.splitlines()
    assert lines and {json.loads(x)["program"] for x in lines} == {f"kafka.{WEST}"}


def test_a_partition_drill_keeps_every_acknowledged_message(regions: Regions,
                                                            tmp_path: Path) -> None:
    drill_file = shortened("partition", tmp_path, **{
        "traffic.duration": "45s", "traffic.rate": 15, "faults.0.at": "12s",
        "faults.0.duration": "20s"})
    out = tmp_path / "journal"
    proc, result = run(regions.home, drill_file, out, timeout=900)
    assert proc.returncode == 0, (result["counts"], result.get("witnesses"), proc.stderr)
    assert result["valid"] and all(v == 0 for v in result["counts"].values())
    assert result["sends"]["acknowledged"] == result["sends"]["invoked"] > 300
    assert max(result["peak_lag_ms"].values()) >= 5000, result["peak_lag_ms"]
    assert result["converge_s"] is not None
    hist = records(out)
    window = [r["t"] for r in hist if r["kind"] == "nemesis"]
    assert len(window) == 2 and 19 <= window[1] - window[0] <= 30, window
    start, stop = window
    homes = {r["conv"]: r["home"] for r in hist if r["kind"] == "conv"}
    made: dict[tuple[str, str], tuple[float, str]] = {}
    acked: dict[tuple[str, str], float] = {}
    for r in hist:
        if r["kind"] == "send" and r["type"] == "invoke":
            made.setdefault((r["conv"], r["cid"]), (r.get("queued", r["t"]), r["region"]))
        elif r["kind"] == "send" and r["type"] == "ok":
            acked[(r["conv"], r["cid"])] = r["t"]
    for region in (EAST, WEST):
        # each side kept acknowledging the conversations it homes during the cut...
        local = [k for k, (t, where) in made.items() if where == region
                 and homes[k[0]] == region and start < t and acked[k] < stop]
        assert len(local) >= 10, (region, len(local))
        # ...and nothing homed across the cut was acknowledged before the heal
        remote = [k for k, (t, where) in made.items() if where == region
                  and homes[k[0]] != region and start + 1 < t < stop]
        assert remote and all(acked[k] > stop - 1 for k in remote), region
    # the clients' own connections were never cut
    end = next(r["t"] for r in hist if r["kind"] == "phase" and r["name"] == "final-read")
    assert not [r for r in hist if r["kind"] == "conn" and r["type"] == "close"
                and r["t"] < end]


async def _cross_send_times(dep: Regions, conv: str, client: Client, n: int) -> float:
    took = []
    for _ in range(n):
        t0 = time.monotonic()
        await client.send_text(conv, uuid.uuid4().hex[:12], timeout=30)
        took.append(time.monotonic() - t0)
    return statistics.median(took)


def test_a_slow_link_slows_only_what_crosses_it(regions: Regions) -> None:
    dep = regions

    async def scenario() -> tuple[float, float, float, float]:
        a = await Client.open(dep.url(EAST), dep.token(f"a-{uuid.uuid4().hex[:6]}"))
        b = await Client.open(dep.url(WEST), dep.token(f"b-{uuid.uuid4().hex[:6]}"))
        conv = (await a.create([b.hello["user"]]))["conv"]  # homed in us-east
        local = (await b.create([f"c-{uuid.uuid4().hex[:6]}"]))["conv"]  # homed in eu-west
        before = await _cross_send_times(dep, conv, b, 5)
        fault = json.loads(msgctl("chaos", "link", EAST, WEST, "--latency", "400ms",
                                  "--duration", "90s", "--json", "--home",
                                  str(dep.home)).stdout)
        try:
            listing = proxies(dep)
            for region in (EAST, WEST):
                for proxy in listing[region].values():
                    assert {t["type"] for t in proxy["toxics"]} == {"latency"}, proxy
            during = await _cross_send_times(dep, conv, b, 5)
            local_during = await _cross_send_times(dep, local, b, 5)
        finally:
            msgctl("chaos", "heal", fault["id"], "--home", str(dep.home))
        after = await _cross_send_times(dep, conv, b, 5)
        for c in (a, b):
            await c.close()
        return before, during, local_during, after

    before, during, local_during, after = asyncio.run(scenario())
    # a send from eu-west to a us-east conversation crosses the link at least twice each
    # way (produce to the home's ingress, the event mirrored back): 400 ms each direction
    assert during - before >= 0.8, (before, during)
    # a conversation homed in eu-west does not cross the link
    assert local_during < during - 0.5, (local_during, during)
    assert after < during - 0.5, (during, after)


def test_isolate_and_heal_by_hand(regions: Regions) -> None:
    dep = regions
    out = json.loads(msgctl("chaos", "isolate", WEST, "--duration", "5m", "--json", "--home",
                            str(dep.home)).stdout)
    assert out["description"] == f"isolate {WEST}"
    chain = f"MSGCTL-{deployment_id(dep.home)}-{out['id']}"
    assert chain in netfilter.snapshot()
    healed = msgctl("chaos", "heal", "--home", str(dep.home))
    assert f"healed {out['id']}" in healed.stdout and chain not in netfilter.snapshot()
