"""The partition mechanism on this machine's real kernel: two "regions" (echo servers and
clients in cgroups of their own on 127.0.0.1 and 127.0.0.2), cut with the rules a partition
installs; a client outside the cgroups is never cut; healing leaves no rule behind."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chaos import cgroups, netfilter
from chaos.netfilter import RegionNet
from tests.chaos.conftest import require_root
from tests.conftest import free_block

ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
print("ready", flush=True)
def serve(c):
    while (d := c.recv(100)):
        c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as s:
        s.settimeout(1.5); s.sendall(b"ping"); print(s.recv(10).decode())
except OSError as e:
    print("cut", type(e).__name__)
"""


@dataclass
class Pair:
    deployment: str
    a: RegionNet
    b: RegionNet
    port: int


@pytest.fixture
def pair() -> Iterator[Pair]:
    require_root()
    dep = f"t{secrets.token_hex(3)}"
    a, b = RegionNet("a", "127.0.0.1", 0), RegionNet("b", "127.0.0.2", 1)
    port = free_block(1, "127.0.0.1", also=("127.0.0.2",))
    cgroups.create(dep, ["a", "b"])
    netfilter.restore(netfilter.base_rules(dep, [a, b]))
    servers = []
    try:
        for r in (a, b):
            procs = cgroups.procs_file(dep, r.name, cgroups.PROGRAMS)
            assert procs is not None
            p = subprocess.Popen(cgroups.join_argv(procs, [sys.executable, "-c", ECHO, r.host,
                                                           str(port)]),
                                 stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            servers.append(p)
        yield Pair(dep, a, b, port)
    finally:
        for p in servers:
            p.kill()
            p.wait()
        netfilter.remove_all(dep)
        cgroups.remove(dep)


def talk(pair: Pair, source: str | None, dest: RegionNet) -> str:
    """Connect from a process in `source`'s cgroup (None: in no region) to `dest`'s server."""
    argv = [sys.executable, "-c", CLIENT, dest.host, str(pair.port)]
    if source is not None:
        procs = cgroups.procs_file(pair.deployment, source, cgroups.PROGRAMS)
        assert procs is not None
        argv = cgroups.join_argv(procs, argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()


def test_the_base_chain_marks_but_cuts_nothing(pair: Pair) -> None:
    assert talk(pair, "a", pair.b) == "ping"
    assert talk(pair, "b", pair.a) == "ping"
    assert talk(pair, None, pair.a) == "ping"


def test_a_partition_cuts_both_regions_but_never_an_outside_client(pair: Pair) -> None:
    before = netfilter.snapshot()
    netfilter.restore(netfilter.cut_rules(pair.deployment, "f1",
                                          [(pair.a, pair.b), (pair.b, pair.a)]))
    try:
        assert talk(pair, "a", pair.b).startswith("cut")
        assert talk(pair, "b", pair.a).startswith("cut")
        # each region still reaches itself, and clients reach both sides
        assert talk(pair, "a", pair.a) == "ping" and talk(pair, "b", pair.b) == "ping"
        assert talk(pair, None, pair.a) == "ping" and talk(pair, None, pair.b) == "ping"
    finally:
        netfilter.remove_fault(pair.deployment, "f1")
    assert netfilter.snapshot() == before
    assert talk(pair, "a", pair.b) == "ping"


def test_a_one_way_cut_drops_only_what_a_sends(pair: Pair) -> None:
    netfilter.restore(netfilter.cut_rules(pair.deployment, "f2", [(pair.a, pair.b)]))
    try:
        # a's connection to b: a's packets dropped
        assert talk(pair, "a", pair.b).startswith("cut")
        # b's connection to a gets through to a, but a's answer (a's packets) does not
        assert talk(pair, "b", pair.a).startswith("cut")
        # an outside client's packets, and b's server answering it, are never dropped
        assert talk(pair, None, pair.b) == "ping" and talk(pair, None, pair.a) == "ping"
    finally:
        netfilter.remove_fault(pair.deployment, "f2")


def test_an_established_connection_is_cut_too(pair: Pair) -> None:
    procs = cgroups.procs_file(pair.deployment, "a", cgroups.PROGRAMS)
    assert procs is not None
    chatty = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
s.settimeout(1.5)
for i in range(100):
    line = sys.stdin.readline()
    if not line:
        break
    try:
        s.sendall(b"x"); print(s.recv(10).decode(), flush=True)
    except OSError as e:
        print("cut", flush=True)
"""
    p = subprocess.Popen(cgroups.join_argv(procs, [sys.executable, "-c", chatty, pair.b.host,
                                                   str(pair.port)]),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None

    def exchange() -> str:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
        return p.stdout.readline().strip()  # type: ignore[union-attr]

    try:
        assert exchange() == "x"
        netfilter.restore(netfilter.cut_rules(pair.deployment, "f3", [(pair.a, pair.b)]))
        try:
            assert exchange() == "cut"
        finally:
            netfilter.remove_fault(pair.deployment, "f3")
    finally:
        p.kill()
        p.wait()


def test_connections_of_this_test_process_stay_open(pair: Pair) -> None:
    """The pytest process is in no region's cgroup: a partition never touches it."""
    netfilter.restore(netfilter.cut_rules(pair.deployment, "f4",
                                          [(pair.a, pair.b), (pair.b, pair.a)]))
    try:
        with socket.create_connection((pair.b.host, pair.port), timeout=2) as s:
            s.sendall(b"hello")
            assert s.recv(10) == b"hello"
    finally:
        netfilter.remove_fault(pair.deployment, "f4")
