"""Toxiproxy, the TCP fault proxy in the path of a deployment's inter-region links.

Built once from the Go module proxy (``go install``) into the engine cache,
``<cache>/toxiproxy-<version>/bin/toxiproxy-server`` with a ``fetched.json``
marker, like the engines' jars. Each region of a multi-region topology with
``chaos.link_proxy`` on gets a ``toxiproxy.<region>`` program: its API on the
region's host at ``chaos.proxy_port``, and one proxy per peer engine port that
the region's programs connect to (a peer's Kafka, Cassandra storage port and
Redis), listening on the ports above the API. An iptables redirect sends the
region's connections to those peers through it (`chaos.netfilter`); with no
toxic a proxy only copies bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from msgctl.errors import MsgctlError
from msgctl.infra import fetch
from msgctl.infra.catalog import CASSANDRA, KAFKA, REDIS

NAME = "toxiproxy"
VERSION = "2.5.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
BINARY = "toxiproxy-server"
# the peer ports a region's programs open connections to: what crosses a link
CROSSING = ((KAFKA, "port"), (CASSANDRA, "storage_port"), (REDIS, "port"))


@dataclass(frozen=True)
class LinkProxy:
    """One proxy of `source`'s Toxiproxy: `source`'s programs reach `target`'s `what` via it."""

    name: str
    source: str
    target: str
    what: str
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def binary(version: str = VERSION) -> Path | None:
    """The cached server binary, or None when it was never built."""
    hit = fetch.cached(NAME, version)
    path = fetch.engine_dir(NAME, version) / "bin" / BINARY
    return path if hit is not None and path.is_file() else None


def ensure(version: str = VERSION) -> Path:
    """Build the server with ``go install`` unless it is cached; its path."""
    found = binary(version)
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None:
        raise MsgctlError("the link proxy (Toxiproxy) is built with Go, and 'go' is not on "
                          "PATH; install Go, or set chaos.link_proxy: off in the topology")
    root = fetch.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = fetch.engine_dir(NAME, version)
    work = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "bin").mkdir(parents=True)
    log_path = final.with_name(f"{final.name}.go.log")
    t0 = time.monotonic()
    with log_path.open("w") as log:
        code = subprocess.run([go, "install", f"{MODULE}@v{version}"], stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env={**os.environ, "GOBIN": str(work / "bin")},
                              timeout=600).returncode
    built = work / "bin" / "server"
    if code != 0 or not built.is_file():
        shutil.rmtree(work, ignore_errors=True)
        raise MsgctlError(f"cannot build Toxiproxy {version} with go install (exit {code}); "
                          f"see {log_path}")
    built.rename(work / "bin" / BINARY)
    size = (work / "bin" / BINARY).stat().st_size
    (work / fetch.MARKER).write_text(json.dumps({
        "engine": NAME, "version": version, "jars": 1, "bytes": size,
        "seconds": round(time.monotonic() - t0, 1), "fetched_at": time.time(),
        "artifacts": [f"{MODULE}@v{version}"]}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(work, final)
    return final / "bin" / BINARY


def write_config(conf: Path, proxies: list[LinkProxy]) -> Path:
    path = conf / "proxies.json"
    path.write_text(json.dumps([{"name": p.name, "listen": f"{p.listen_host}:{p.listen_port}",
                                 "upstream": f"{p.upstream_host}:{p.upstream_port}",
                                 "enabled": True} for p in proxies], indent=2))
    return path


def argv(server: Path, host: str, api_port: int, config: Path) -> list[str]:
    return [str(server), "-host", host, "-port", str(api_port), "-config", str(config)]
