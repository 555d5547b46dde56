"""Region failover on two real regions (us-east 127.0.0.1, eu-west 127.0.0.2; real Kafka,
Cassandra, Redis, MirrorMaker 2): a planned move under traffic, a failover during a
partition with both sides sending then reconciled after the heal, and an old home that
comes back after SIGKILL fenced before it sequences anything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos import netfilter
from msgctl.wire import UnexpectedReply
from runtime.core.sequencing import split_seq
from tests.chaos.conftest import require_root
from tests.chaos.drills import records, run, shortened
from tests.conftest import Regions, msgctl, start_regions
from tests.wsclient import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EAST, WEST = "us-east", "eu-west"
CROSS = 15.0  # seconds for anything that crosses the link on a loaded 2-core machine


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    require_root()
    before = netfilter.snapshot()
    dep = start_regions(tmp_path_factory.mktemp("failover"), 2)
    yield dep
    msgctl("down", "--home", str(dep.home), check=False, timeout=300)
    assert netfilter.snapshot() == before


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def region(dep: Regions, *args: str, check: bool = True) -> Any:
    out = msgctl("region", *args, "--home", str(dep.home), check=check, timeout=180)
    return out


async def connect(dep: Regions, where: str, user: str, device: str = "phone") -> Client:
    return await Client.open(dep.url(where), dep.token(user, device))


async def send_until_acked(client: Client, conv: str, cid: str, body: str,
                           seconds: float = 90) -> dict:
    """What a client does: send, and on a timeout or `unavailable` retry with the same cid."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await client.send_text(conv, cid, body, timeout=6)
        except (TimeoutError, UnexpectedReply):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def history(client: Client, conv: str) -> list[dict]:
    out: list[dict] = []
    after = 0
    while True:
        batch = await client.sync(conv, after=after, limit=1000, timeout=CROSS)
        assert batch["t"] == "batch", batch
        out += batch["msgs"]
        if not batch["more"] or not batch["msgs"]:
            return out
        after = batch["msgs"][-1]["seq"]


def check_history(msgs: list[dict], acked: dict[tuple[str, str], int]) -> None:
    """One chain, each acknowledged send exactly once, at its seq or moved from it."""
    prev = 0
    for m in msgs:
        assert m["prev"] == prev and m["seq"] > prev, (m, prev)
        prev = m["seq"]
    by_cid: dict[tuple[str, str], list[dict]] = {}
    for m in msgs:
        by_cid.setdefault((m["from"], m["cid"]), []).append(m)
    for key, seq in acked.items():
        found = by_cid.get(key, [])
        assert len(found) == 1, (key, found)
        assert seq in (found[0]["seq"], found[0].get("moved_from")), (key, seq, found[0])


async def converged(readers: list[Client], conv: str, acked: dict[tuple[str, str], int],
                    seconds: float = 120) -> list[dict]:
    """Every region's history once they all hold every acknowledged send and agree."""
    deadline = time.monotonic() + seconds
    while True:
        views = [await history(r, conv) for r in readers]
        keys = [{(m["from"], m["cid"]) for m in v} for v in views]
        same = all([(m["seq"], m["cid"]) for m in v] == [(m["seq"], m["cid"]) for m in views[0]]
                   for v in views)
        if same and all(set(acked) <= k for k in keys) and \
                all(len(v) == len(k) for v, k in zip(views, keys, strict=True)):
            return views[0]
        if time.monotonic() > deadline:
            return views[0]
        await asyncio.sleep(1)


def region_status(dep: Regions) -> dict[str, dict]:
    return {r["region"]: r for r in json.loads(region(dep, "status", "--json").stdout)}


async def test_bad_input_is_one_line_and_changes_nothing(regions: Regions) -> None:
    dep = regions
    for args, needle in [
        (("failover", "mars", "--to", WEST, "--yes"), "unknown region 'mars'"),
        (("failover", EAST, "--to", EAST, "--yes"), "to itself"),
        (("failover", EAST, "--to", "pluto", "--yes"), "unknown target region"),
        (("move", "no-such-conv", "--to", WEST), "unknown conversation"),
    ]:
        out = region(dep, *args, check=False)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert needle in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert all(r["moved_in"] == 0 for r in region_status(dep).values())


async def test_a_planned_move_under_traffic_has_no_gap_and_no_repeat(regions: Regions) -> None:
    dep = regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    conv = (await a.create([bob]))["conv"]
    acked: dict[tuple[str, str], int] = {}
    stop = asyncio.Event()

    async def sender(client: Client, who: str) -> None:
        i = 0
        while not stop.is_set():
            cid = f"{who}-{i}"
            sent = await send_until_acked(client, conv, cid, f"{who} says {i}")
            acked[(who, cid)] = sent["seq"]
            i += 1
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(sender(a, alice)), asyncio.create_task(sender(b, bob))]
    await asyncio.sleep(4)
    t0 = time.monotonic()
    out = await asyncio.to_thread(region, dep, "move", conv, "--to", WEST, "--json")
    took = time.monotonic() - t0
    moved = json.loads(out.stdout)["moved"]
    assert [(m["from"], m["to"], m["epoch"]) for m in moved] == [(EAST, WEST, 1)], out.stdout
    await asyncio.sleep(4)
    stop.set()
    await asyncio.gather(*tasks)
    final = await converged([a, b], conv, acked)
    check_history(final, acked)
    epochs = [split_seq(m["seq"])[0] for m in final]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == 1, epochs
    assert not any("moved_from" in m for m in final)  # a planned move leaves no orphan
    assert region_status(dep)[WEST]["moved_in"] >= 1
    print(f"move took {took:.1f}s; {len(final)} messages")


async def test_failover_during_a_partition_reconciles_every_acknowledged_message(
        regions: Regions) -> None:
    dep = regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    conv = (await a.create([bob]))["conv"]
    acked: dict[tuple[str, str], int] = {}
    for i in range(3):
        for client, who in ((a, alice), (b, bob)):
            sent = await send_until_acked(client, conv, f"{who}-pre-{i}", "before")
            acked[(who, f"{who}-pre-{i}")] = sent["seq"]
    await converged([a, b], conv, acked)
    msgctl("chaos", "partition", EAST, WEST, "--duration", "300s", "--home", str(dep.home))
    try:
        # the old home keeps acknowledging on its side of the cut
        for i in range(4):
            sent = await send_until_acked(a, conv, f"{alice}-split-{i}", "split", 20)
            acked[(alice, f"{alice}-split-{i}")] = sent["seq"]
        t0 = time.monotonic()
        out = await asyncio.to_thread(region, dep, "failover", EAST, "--to", WEST,
                                      "--conversations", conv, "--yes", "--json")
        assert json.loads(out.stdout)["moved"][0]["epoch"] == 1, out.stdout
        # the new home takes sends at once (bob's first one measures the RTO)
        for i in range(4):
            sent = await send_until_acked(b, conv, f"{bob}-after-{i}", "after", 60)
            if i == 0:
                rto = time.monotonic() - t0
            assert split_seq(sent["seq"])[0] == 1, sent
            acked[(bob, f"{bob}-after-{i}")] = sent["seq"]
        during = region_status(dep)
        assert during[WEST]["reconciling"] == 1, during
    finally:
        msgctl("chaos", "heal", "--home", str(dep.home), check=False)
    t1 = time.monotonic()
    deadline = time.monotonic() + 180
    while region_status(dep)[WEST]["reconciling"] and time.monotonic() < deadline:
        await asyncio.sleep(1)
    reconcile = time.monotonic() - t1
    assert region_status(dep)[WEST]["reconciling"] == 0
    a2 = await connect(dep, EAST, alice, "tablet")
    final = await converged([a2, b], conv, acked)
    check_history(final, acked)
    moved = [m for m in final if "moved_from" in m]
    # alice's sends of the split sort after the failover, each naming its first seq
    assert {m["cid"] for m in moved} == {f"{alice}-split-{i}" for i in range(4)}, moved
    assert all(split_seq(m["seq"])[0] == 1 for m in moved)
    print(f"failover RTO {rto:.1f}s, reconciled {reconcile:.1f}s after the heal")
    # the old home's side heard of it: alice, still connected there, can send again
    sent = await send_until_acked(a, conv, f"{alice}-healed", "healed", 60)
    assert split_seq(sent["seq"])[0] == 1
    # and the region can have its conversations back
    out = await asyncio.to_thread(region, dep, "failback", EAST, "--yes", "--json")
    assert any(m["conv"] == conv and m["to"] == EAST for m in json.loads(out.stdout)["moved"])
    sent = await send_until_acked(b, conv, f"{bob}-back", "back", 60)
    assert split_seq(sent["seq"])[0] == 2


async def test_an_old_home_back_after_sigkill_is_fenced_before_it_sequences(
        regions: Regions) -> None:
    dep = regions
    alice, bob = uid("alice"), uid("bob")
    a = await connect(dep, EAST, alice)
    b = await connect(dep, WEST, bob)
    conv = (await a.create([bob]))["conv"]
    first = await send_until_acked(a, conv, "one", "one")
    pid = next(r["pid"] for r in dep.status()["runtimes"]
               if r["program"] == f"sequencer.{EAST}")
    os.kill(pid, signal.SIGSTOP)
    try:
        # a send taken by us-east's gateway waits in its ingress for a frozen sequencer
        with pytest.raises((TimeoutError, UnexpectedReply)):
            await a.send_text(conv, "two", "two", timeout=3)
        region(dep, "failover", EAST, "--to", WEST, "--conversations", conv, "--yes")
    finally:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):  # the supervisor may have reaped it
            os.kill(pid, signal.SIGCONT)
    # us-east's sequencer comes back (the supervisor restarts it) and is fenced: "two" is
    # sequenced by eu-west, in epoch 1, after "one"
    sent = await send_until_acked(a, conv, "two", "two", 120)
    assert split_seq(sent["seq"])[0] == 1 and sent["prev"] == first["seq"], sent
    final = await converged([a, b], conv, {(alice, "one"): first["seq"],
                                           (alice, "two"): sent["seq"]})
    assert [m["cid"] for m in final] == ["one", "two"], final
    log = Path(dep.home / "logs" / f"sequencer.{EAST}.log").read_text()
    assert f"conversation {conv} fenced by epoch 1" in log


def test_the_failover_drill_keeps_every_acknowledged_message(regions: Regions,
                                                             tmp_path: Path) -> None:
    # runs last in the module: it moves every conversation of us-east and back
    drill_file = shortened("failover", tmp_path, **{
        "traffic.duration": "70s", "traffic.rate": 12, "faults.0.at": "10s",
        "faults.0.duration": "25s", "faults.1.at": "16s", "faults.2.at": "50s"})
    out = tmp_path / "journal"
    proc, result = run(regions.home, drill_file, out, timeout=900)
    assert proc.returncode == 0, (result["counts"], result.get("witnesses"), proc.stderr)
    assert result["valid"] and all(v == 0 for v in result["counts"].values())
    assert result["sends"]["acknowledged"] == result["sends"]["invoked"] > 200
    figures = result["failover"]
    assert figures["rto_s"] is not None and figures["reconciled_after_heal_s"] is not None
    moved = [f for f in result["faults"] if f["fault"].startswith(("failover", "failback"))]
    assert len(moved) == 2 and all(f["targets"] for f in moved), moved
    stored = [m for r in records(out) if r["kind"] == "read" for m in r["msgs"]]
    print(f"failover drill: RTO {figures['rto_s']}s, reconciled "
          f"{figures['reconciled_after_heal_s']}s after the heal, "
          f"{sum(1 for m in stored if m.get('moved_from'))} stored messages moved")
