"""Shared fixtures: real deployments started with `msgctl up` in temporary homes."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from msgctl.home import Home
from msgctl.tls import CaFiles, init_ca
from runtime import auth

# Every deployment the suite starts serves TLS (as every shipped topology does), signed by
# one CA for the whole session (the topology's `tls.ca`), which the test process and the
# msgctl commands it runs trust the way a user's client does: SSL_CERT_FILE.
TEST_CA = Path(tempfile.mkdtemp(prefix="msgctl-test-ca-"))
atexit.register(shutil.rmtree, TEST_CA, ignore_errors=True)
init_ca(CaFiles(TEST_CA), "tests")
os.environ["SSL_CERT_FILE"] = str(TEST_CA / "ca.pem")
TEST_TLS = {"ca": str(TEST_CA)}

# limits small enough that the abuse paths are cheap to reach in tests
TEST_LIMITS = {
    "max_frame_bytes": 65536, "hard_frame_bytes": 262144, "max_body_bytes": 16384,
    "rate_per_second": 1000, "rate_burst": 1000, "max_strikes": 50, "send_queue_bytes": 524288,
    # the suite's clients all come from 127.0.0.1 and reuse users; tests/e2e/test_caps.py
    # runs the caps at small values on a deployment of its own
    "rate_bytes_per_second": 64 * 1024 * 1024, "rate_burst_bytes": 64 * 1024 * 1024,
    "max_connections_per_user": 1000, "rest_rate_per_second": 1000, "rest_rate_burst": 1000,
}
TEST_PRESENCE = {"heartbeat_ms": 30000, "grace_ms": 500}


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, with port+20 free too (the media
    endpoint of a gateway on it).

    Ports the kernel hands to outgoing connections (Kafka and Cassandra clients make
    many) could be taken again between this check and a deployment's bind.
    """
    return free_block(1, host, spare=(20,))


def msgctl(*args: str, check: bool = True, timeout: float = 180,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "msgctl.cli.app", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200",
                                                           **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"msgctl {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def write_topology(path: Path, port: int, **overrides: Any) -> Path:
    topo = {"name": "test", "backend": "embedded",
            "regions": [{"name": "local", "host": "127.0.0.1", "gateway": {"port": port}}],
            "limits": dict(TEST_LIMITS), "presence": dict(TEST_PRESENCE),
            "tls": dict(TEST_TLS)}
    for key, value in overrides.items():
        if isinstance(value, dict):
            topo[key].update(value)
        else:
            topo[key] = value
    path.write_text(yaml.safe_dump(topo))
    return path


def free_block(count: int, host: str = "127.0.0.1", spare: tuple[int, ...] = (),
               also: tuple[str, ...] = ()) -> int:
    """A base port with `count` consecutive free ports above it (and base+`spare`), on
    `host` and on every host in `also`."""
    low, _ = _EPHEMERAL
    for _ in range(500):
        base = random.randrange(10_000, low - count - 30)
        socks: list[socket.socket] = []
        try:
            for h in (host, *also):
                for p in [*range(base, base + count), *(base + o for o in spare)]:
                    s = socket.socket()
                    socks.append(s)
                    s.bind((h, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


def write_cluster_topology(path: Path, base: int, **overrides: Any) -> Path:
    """One region on real engines: gateways on base, base+1; runtimes base+10..12; engines
    from base+20 (S3Proxy on base+26); the gateways' media ports base+27, base+28. The
    JVMs are not warmed up (tests.infra.test_engines covers that): tests measure no
    latency, and each warm-up would add a minute."""
    topo: dict[str, Any] = {
        "name": "test-cluster", "backend": "cluster",
        "regions": [{"name": "local", "host": "127.0.0.1",
                     "gateway": {"port": base, "processes": 2},
                     "engines": {
                         "kafka": {"port": base + 20, "controller_port": base + 21,
                                   "warmup_s": 0},
                         "cassandra": {"port": base + 22, "storage_port": base + 23,
                                       "jmx_port": base + 24, "warmup_s": 0},
                         "redis": {"port": base + 25},
                         "s3": {"port": base + 26}}}],
        "limits": dict(TEST_LIMITS), "presence": dict(TEST_PRESENCE),
        "media": {"port": base + 27}, "tls": dict(TEST_TLS)}
    topo.update(overrides)
    path.write_text(yaml.safe_dump(topo))
    return path


REGIONS = (("us-east", "127.0.0.1"), ("eu-west", "127.0.0.2"), ("ap-south", "127.0.0.3"))


def write_regions_topology(path: Path, base: int, count: int = 2) -> Path:
    """`count` regions on 127.0.0.1, .2, .3 with the same ports (each its own address):
    gateway base, runtimes base+10..12, Kafka base+20/21, Cassandra base+22/23 and JMX
    base+24+4i (JMX listens on localhost), Redis base+25; each region's link proxy
    (Toxiproxy) API on base+40, its proxies above it; its gRPC agent on base+49 (every
    verb goes through the agents, as with the shipped multi-region topologies)."""
    regions = [{
        "name": name, "host": host, "gateway": {"port": base, "processes": 1},
        "agent": f"{host}:{base + 49}",
        "engines": {
            "kafka": {"port": base + 20, "controller_port": base + 21, "heap_mb": 384,
                      "warmup_s": 0},
            "cassandra": {"port": base + 22, "storage_port": base + 23,
                          "jmx_port": base + 24 + 4 * i, "heap_mb": 768, "warmup_s": 0},
            "redis": {"port": base + 25}}}
        for i, (name, host) in enumerate(REGIONS[:count])]
    topo = {"name": f"test-{count}-regions", "backend": "cluster", "regions": regions,
            "limits": dict(TEST_LIMITS), "presence": dict(TEST_PRESENCE),
            "chaos": {"proxy_port": base + 40}, "tls": dict(TEST_TLS)}
    path.write_text(yaml.safe_dump(topo))
    return path


@dataclass
class Regions:
    """A multi-region deployment: one gateway per region on the same port, own address."""

    home: Path
    topology: Path
    port: int
    names: tuple[str, ...]
    hosts: tuple[str, ...]

    def url(self, region: str) -> str:
        return f"wss://{self.hosts[self.names.index(region)]}:{self.port}/v1/ws"

    def token(self, user: str, device: str = "phone", ttl: int = 3600) -> str:
        return auth.issue(Home(self.home).secret(), user, device, ttl)

    def status(self) -> dict[str, Any]:
        return json.loads(msgctl("status", "--json", "--home", str(self.home),
                                 check=False).stdout)


def start_regions(root: Path, count: int) -> Regions:
    hosts = tuple(h for _, h in REGIONS[:count])
    base = free_block(50, hosts[0], also=hosts[1:])
    dep = Regions(root / "home", write_regions_topology(root / "topology.yaml", base, count),
                  base, tuple(n for n, _ in REGIONS[:count]), hosts)
    msgctl("up", "--home", str(dep.home), "-t", str(dep.topology), timeout=900)
    return dep


@pytest.fixture(scope="module")
def two_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    """us-east (127.0.0.1) and eu-west (127.0.0.2) on real engines, for one test module
    (taken down after it: the machine holds one multi-region stack at a time)."""
    dep = start_regions(tmp_path_factory.mktemp("regions"), 2)
    yield dep
    msgctl("down", "--home", str(dep.home), check=False, timeout=300)


@dataclass
class Deployment:
    home: Path
    topology: Path
    port: int
    gateways: int = 1  # gateway processes on port, port+1, ...
    family: str = "embedded"
    _next: int = 0

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/v1/ws"

    def gateway_url(self, i: int) -> str:
        return f"wss://127.0.0.1:{self.port + i % self.gateways}/v1/ws"

    def next_ws_url(self) -> str:
        """Gateways in turn, so a test's devices spread over every gateway process."""
        self._next += 1
        return self.gateway_url(self._next)

    @property
    def http_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def token(self, user: str, device: str = "phone", ttl: int = 3600) -> str:
        return auth.issue(Home(self.home).secret(), user, device, ttl)

    def up(self) -> None:
        msgctl("up", "--home", str(self.home), "-t", str(self.topology))

    def down(self) -> None:
        msgctl("down", "--home", str(self.home))

    def status(self) -> dict[str, Any]:
        return json.loads(msgctl("status", "--json", "--home", str(self.home),
                                 check=False).stdout)

    def node_pid(self) -> int:
        pids = {r["pid"] for r in self.status()["runtimes"]}
        assert len(pids) == 1 and None not in pids, pids
        return pids.pop()

    def get(self, path: str, token: str | None = None,
            timeout: float = 5) -> tuple[int, Any]:
        req = urllib.request.Request(self.http_url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            body, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        return status, json.loads(body) if "json" in ctype else body.decode()


def start_deployment(root: Path, **overrides: Any) -> Deployment:
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    dep = Deployment(root / "home", write_topology(root / "topology.yaml", port, **overrides),
                     port)
    dep.up()
    return dep


def start_cluster_deployment(root: Path, **overrides: Any) -> Deployment:
    base = free_block(30)
    root.mkdir(parents=True, exist_ok=True)
    dep = Deployment(root / "home", write_cluster_topology(root / "topology.yaml", base,
                                                           **overrides),
                     base, gateways=2, family="cluster")
    msgctl("up", "--home", str(dep.home), "-t", str(dep.topology), timeout=600)
    return dep


@pytest.fixture(scope="session")
def cluster_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One region on real Kafka, Cassandra and Redis, started once per test session."""
    dep = start_cluster_deployment(tmp_path_factory.mktemp("cluster"))
    yield dep
    msgctl("down", "--home", str(dep.home), check=False, timeout=300)


@pytest.fixture(scope="session")
def embedded_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = start_deployment(tmp_path_factory.mktemp("shared"))
    yield dep
    dep.down()


@pytest.fixture(scope="session", params=["embedded", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """The protocol tests run against both adapter families (each test uses its own users)."""
    return request.getfixturevalue(f"{request.param}_deployment")


@pytest.fixture
def fresh_deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment of its own, for tests that restart or kill it."""
    dep = start_deployment(tmp_path)
    yield dep
    msgctl("down", "--home", str(dep.home), check=False)
