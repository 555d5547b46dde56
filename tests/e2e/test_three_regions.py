"""Three regions start on this machine, every pair is linked both ways, and a
conversation moves its home between them."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import msgctl, start_regions
from tests.wsclient import Client

# three Cassandra nodes join one after the other: up alone takes 3.5 min on 2 cores
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


async def test_three_regions_start_and_a_message_crosses_every_link(tmp_path: Path) -> None:
    dep = await asyncio.to_thread(start_regions, tmp_path, 3)
    try:
        status = dep.status()
        assert all(r["state"] == "RUNNING" for r in status["runtimes"]), status["runtimes"]
        assert {r["program"] for r in status["runtimes"]} >= {
            f"mirror.{n}" for n in dep.names} | {f"cassandra.{n}" for n in dep.names}
        links = {(x["source"], x["target"]) for x in status["replication"]}
        assert len(links) == 6 and not [x for x in status["replication"] if x["stalled"]]
        users = [f"u{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
        clients = [await Client.open(dep.url(n), dep.token(u))
                   for n, u in zip(dep.names, users, strict=True)]
        created = await clients[2].create(users[:2])  # homed in ap-south
        conv = created["conv"]
        assert created["home"] == "ap-south"
        for i, c in enumerate(clients):
            await c.send_text(conv, f"from-{i}", timeout=20)
        for i, c in enumerate(clients):
            got = await c.wait_msgs(conv, 2, timeout=30)
            assert sorted(m["cid"] for m in got) == sorted(
                f"from-{k}" for k in range(3) if k != i)
        # a planned move with three regions: ap-south is fenced, us-east and ap-south's
        # gateways send to eu-west now, and every region keeps one chain
        out = await asyncio.to_thread(msgctl, "region", "move", conv, "--to", "eu-west",
                                      "--json", "--home", str(dep.home), timeout=180)
        assert json.loads(out.stdout)["moved"][0]["epoch"] == 1, out.stdout
        sent = [await c.send_text(conv, f"after-{i}", timeout=30)
                for i, c in enumerate(clients)]
        assert all(s["seq"] >> 40 == 1 for s in sent), sent
        assert sent[0]["prev"] == 3  # right after the three sends of epoch 0
        for i, c in enumerate(clients):
            got = await c.wait_msgs(conv, 4, timeout=30)
            assert [m["cid"] for m in got][-2:] == [f"after-{k}" for k in range(3) if k != i]
        for c in clients:
            await c.close()
    finally:
        await asyncio.to_thread(msgctl, "down", "--home", str(dep.home), check=False,
                                timeout=300)
