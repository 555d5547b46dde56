"""Deployment life cycle end to end: durability across down/up, SIGKILL mid-traffic, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from msgctl.tls import client_context
from tests.conftest import Deployment, free_port, msgctl, write_topology
from tests.wsclient import Client

pytestmark = pytest.mark.e2e


async def test_down_up_keeps_history_cursors_and_watermarks(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    a = await Client.open(dep.ws_url, dep.token("alice"))
    b = await Client.open(dep.ws_url, dep.token("bob"))
    conv = (await a.create(["bob"], conv="durable"))["conv"]
    for i in range(6):
        await a.send_text(conv, f"m{i}", f"body {i}")
    await b.wait_msgs(conv, 6)
    await b.send({"t": "ack", "conv": conv, "seq": 4})
    await b.send({"t": "read", "conv": conv, "seq": 3})
    await a.wait_t("receipt", kind="read", seq=3)
    await a.close()
    await b.close()
    dep.down()
    dep.up()
    a = await Client.open(dep.ws_url, dep.token("alice"))
    b = await Client.open(dep.ws_url, dep.token("bob"))
    # cursor kept: resume after the ack, not from the start and not from nothing
    got = await b.wait_msgs(conv, 2)
    await b.quiet()
    assert [m["seq"] for m in b.msgs(conv)] == [5, 6]
    assert [m["body"] for m in got] == ["body 4", "body 5"]
    history = await a.request({"t": "sync", "conv": conv, "after": 0})
    assert [m["cid"] for m in history["msgs"]] == [f"m{i}" for i in range(6)]
    # watermarks kept: a read below the stored one moves nothing, a higher one does
    await b.send({"t": "read", "conv": conv, "seq": 2})
    await b.send({"t": "read", "conv": conv, "seq": 5})
    r = await a.wait_t("receipt", kind="read")
    assert r["seq"] == 5
    # the sequencer continues the chain after a restart
    nxt = await a.send_text(conv, "after-restart")
    assert (nxt["seq"], nxt["prev"]) == (7, 6)
    again = await a.send_text(conv, "m0")  # dedupe survives the restart too
    assert again["seq"] == 1
    await a.close()
    await b.close()


async def _sender(dep: Deployment, conv: str, n: int, sent: dict[str, int]) -> None:
    """Send n messages one by one; after any failure, reconnect and retry the same cid."""
    while len(sent) < n:
        try:
            c = await Client.open(dep.ws_url, dep.token("alice", "phone"))
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
            await asyncio.sleep(0.05)
            continue
        try:
            while len(sent) < n:
                cid = f"k{len(sent)}"
                reply = await c.request({"t": "send", "conv": conv, "cid": cid, "kind": "text",
                                         "body": cid}, timeout=5)
                if reply["t"] == "sent":
                    sent[cid] = reply["seq"]
                else:
                    assert reply.get("code") == "unavailable", reply
                await asyncio.sleep(0.003)
        except (ConnectionError, TimeoutError, ConnectionClosed):
            pass
        finally:
            with contextlib.suppress(Exception):
                await c.close()


async def _receiver(dep: Deployment, conv: str, n: int,
                    connections: list[list[dict]]) -> None:
    """Stay connected (reconnecting as needed), ack what arrives, until n messages are seen."""
    seen: set[int] = set()
    while len(seen) < n:
        try:
            c = await Client.open(dep.ws_url, dep.token("bob", "phone"))
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
            await asyncio.sleep(0.05)
            continue
        frames = c.msgs  # live view of this connection's msg frames
        connections.append([])
        try:
            while len(seen) < n and not c.closed:
                got = frames(conv)
                connections[-1] = got
                if got:
                    seen.update(m["seq"] for m in got)
                    await c.send({"t": "ack", "conv": conv, "seq": got[-1]["seq"]})
                await asyncio.sleep(0.05)
            connections[-1] = frames(conv)
        except (ConnectionError, ConnectionClosed):
            pass
        finally:
            with contextlib.suppress(Exception):
                await c.close()


async def test_sigkill_mid_traffic_loses_no_acknowledged_message(
        fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    a = await Client.open(dep.ws_url, dep.token("alice", "setup"))
    conv = (await a.create(["bob"], conv="crash"))["conv"]
    await a.close()
    b0 = await Client.open(dep.ws_url, dep.token("bob", "phone"))  # register bob's phone
    await b0.close()
    n = 300
    sent: dict[str, int] = {}
    connections: list[list[dict]] = []
    sender = asyncio.create_task(_sender(dep, conv, n, sent))
    receiver = asyncio.create_task(_receiver(dep, conv, n, connections))
    while len(sent) < 100:
        await asyncio.sleep(0.01)
    pid = dep.node_pid()
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(sender, receiver), 120)
    status = dep.status()
    assert {r["state"] for r in status["runtimes"]} == {"RUNNING"}
    assert status["runtimes"][0]["restarts"] >= 1 and dep.node_pid() != pid
    # every acknowledged send is stored once, with the seq it was acknowledged with
    code, body = dep.get(f"/v1/conversations/{conv}/messages?limit=1000", dep.token("alice"))
    assert code == 200
    stored = {m["cid"]: m["seq"] for m in body["msgs"]}
    assert len(stored) == len(body["msgs"]) == n
    assert stored == sent
    seqs = [m["seq"] for m in body["msgs"]]
    assert seqs == list(range(1, n + 1))
    assert [m["prev"] for m in body["msgs"]] == list(range(0, n))
    # the receiver saw everything, each connection in order with no gap from where it resumed
    assert len(connections) >= 2
    highest = 0
    for frames in connections:
        prev = None
        for m in frames:
            if prev is None:
                assert m["prev"] <= highest  # resumed at or before what it had: no gap
            else:
                assert m["prev"] == prev
            prev = m["seq"]
        if frames:
            highest = max(highest, frames[-1]["seq"])
    assert {m["seq"] for frames in connections for m in frames} == set(range(1, n + 1))


def test_cli_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    missing = msgctl("up", "--home", home, "-t", "regions/nope.yaml", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "msgctl: topology file not found: regions/nope.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [\n")
    r = msgctl("up", "--home", home, "-t", str(bad), check=False)
    assert r.returncode == 2 and "not valid YAML" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    unknown = write_topology(tmp_path / "unknown.yaml", free_port(), limits={"bogus": 1})
    r = msgctl("up", "--home", home, "-t", str(unknown), check=False)
    assert r.returncode == 2 and "bogus" in r.stderr
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = write_topology(tmp_path / "taken.yaml", port)
        r = msgctl("up", "--home", home, "-t", str(taken), check=False)
    assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = msgctl("status", "--home", home, check=False)
    assert r.returncode == 3
    r = msgctl("down", "--home", home, check=False)
    assert r.returncode == 0 and "nothing is running" in r.stdout
    r = msgctl("restart", "gateway*", "--home", home, check=False)
    assert r.returncode == 3 and r.stderr.startswith("msgctl: nothing is running")
    r = msgctl("token", "alice", "--ttl", "soon", "--home", home, check=False)
    assert r.returncode == 2 and "bad duration" in r.stderr
    nowhere = tmp_path / "no-such-home"
    r = msgctl("token", "alice", "--home", str(nowhere), check=False)
    assert r.returncode == 2 and "no deployment home" in r.stderr
    assert not nowhere.exists()  # no home, no secret made on the side
    r = msgctl("up", "--home", home, "--bogus-flag", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_up_status_token_logs_restart_down_with_port_offset(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    port = free_port()
    env = {"MSGCTL_HOME": home}
    msgctl("up", "--port-offset", str(port - 7400), env=env)  # the default topology
    try:
        again = msgctl("up", "--port-offset", str(port - 7400), env=env)
        assert "already up" in again.stdout
        # another topology (or offset) on a running home is refused, not "already up"
        other = msgctl("up", "-t", "regions/one-region.yaml", "--port-offset",
                       str(port - 7400), env=env, check=False)
        assert other.returncode == 2 and "msgctl down" in other.stderr, other
        shifted = msgctl("up", "--port-offset", str(port - 7400 + 1), env=env, check=False)
        assert shifted.returncode == 2 and "port offset" in shifted.stderr
        st = json.loads(msgctl("status", "--json", env=env).stdout)
        assert st["running"] is True and st["home"] == home
        assert st["regions"][0]["ws_url"] == f"wss://127.0.0.1:{port}/v1/ws"
        names = {r["runtime"] for r in st["runtimes"]}
        assert names == {"gateway.local", "sequencer.local", "presence.local", "push.local"}
        assert all(r["state"] == "RUNNING" and r["pid"] for r in st["runtimes"])
        # an 80-column terminal: every line fits, the gateway's URL on one line, whole
        table = msgctl("status", env={**env, "COLUMNS": "80"}).stdout
        assert max(len(line) for line in table.splitlines()) <= 80, table
        assert table.splitlines()[2].split() == ["region", "runtime", "state", "pid", "up",
                                                 "restarts", "endpoint"], table
        gateway = next(line for line in table.splitlines() if " gateway " in line).split()
        assert gateway[:3] == ["local", "gateway", "RUNNING"], table
        assert gateway[-1] == f"wss://127.0.0.1:{port}/v1/ws", table
        tok = msgctl("token", "alice", "phone", "--json", env=env)
        info = json.loads(tok.stdout)
        assert info["user"] == "alice" and info["ws_url"].endswith(f":{port}/v1/ws")

        # the default topology serves TLS with a CA of its own home, as a user's would:
        # a client trusts the file `ca show` names
        ca = json.loads(msgctl("ca", "show", "--json", env=env).stdout)["ca"]
        assert ca == f"{home}/tls/ca.pem"

        async def hello() -> dict:
            c = await Client.open(info["ws_url"], info["token"],
                                  ssl=client_context(Path(ca)))
            await c.close()
            return c.hello
        assert asyncio.run(hello())["user"] == "alice"
        logs = msgctl("logs", "gateway*", "-n", "20", env=env).stdout
        assert "gateway.local" in logs and "listening on" in logs
        old_pid = st["runtimes"][0]["pid"]
        out = msgctl("restart", "sequencer*", env=env).stdout
        assert "restarted node.local" in out and "RUNNING" in out
        st2 = json.loads(msgctl("status", "--json", env=env).stdout)
        assert st2["runtimes"][0]["pid"] != old_pid
        assert all(r["state"] == "RUNNING" for r in st2["runtimes"])
        # no glob: everything, but only when asked for (no terminal here to ask on)
        r = msgctl("restart", env=env, check=False)
        assert r.returncode == 2 and "--yes" in r.stderr
        r = msgctl("restart", "nothing-like-this*", env=env, check=False)
        assert r.returncode == 2 and "no program or runtime matches" in r.stderr
        # stop keeps a program down (no restart by the supervisor) until start
        out = msgctl("stop", "gateway*", env=env).stdout
        assert "stopped node.local" in out
        time.sleep(3)
        st4 = json.loads(msgctl("status", "--json", env=env).stdout)
        assert {r["state"] for r in st4["runtimes"]} == {"STOPPED"}
        assert "nothing to stop" in msgctl("stop", "node*", env=env).stdout
        out = msgctl("start", "node.local", env=env).stdout
        assert "started node.local" in out and "RUNNING" in out
        assert "nothing to start" in msgctl("start", "node*", env=env).stdout
        r = msgctl("stop", "nothing-like-this*", env=env, check=False)
        assert r.returncode == 2 and "no program or runtime matches" in r.stderr
    finally:
        msgctl("down", env=env)
    st3 = json.loads(msgctl("status", "--json", env=env, check=False).stdout)
    assert st3["running"] is False
    assert all(r["state"] == "STOPPED" for r in st3["runtimes"])


def test_two_deployments_side_by_side(tmp_path: Path) -> None:
    from tests.conftest import start_deployment

    one = start_deployment(tmp_path / "one")
    two = start_deployment(tmp_path / "two")
    try:
        async def roundtrip(dep: Deployment) -> int:
            a = await Client.open(dep.ws_url, dep.token("alice"))
            conv = (await a.create(["bob"], conv="same-id"))["conv"]
            sent = await a.send_text(conv, "x")
            await a.close()
            return sent["seq"]
        assert asyncio.run(roundtrip(one)) == 1
        assert asyncio.run(roundtrip(two)) == 1  # separate stores
        assert asyncio.run(roundtrip(one)) == 1  # same cid: deduped in its own store
    finally:
        one.down()
        two.down()


def test_a_node_that_cannot_start_ends_in_fatal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "local.db").write_text("this is not a database " * 10)
    topo = write_topology(tmp_path / "t.yaml", free_port())
    r = msgctl("up", "--home", str(home), "-t", str(topo), check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == ("msgctl: node.local failed to start: exited 2; gave up after 5 "
                                "quick restarts; see 'msgctl logs node.local'")
    st = json.loads(msgctl("status", "--json", "--home", str(home), check=False).stdout)
    assert st["running"] is False
    assert {x["state"] for x in st["runtimes"]} == {"FATAL"}
    assert {x["restarts"] for x in st["runtimes"]} == {5}
    logs = msgctl("logs", "node*", "--home", str(home)).stdout
    assert "cannot open the store" in logs and "Traceback" not in logs
