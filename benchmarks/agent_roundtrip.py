"""What the gRPC agents cost an operator: status and restart round trips through a region's
agent (mutual TLS) next to the supervisor's local socket, on two embedded two-region
deployments it starts in temporary homes (one with agents, one without) and stops.

    python benchmarks/agent_roundtrip.py [--calls 50] [--restarts 5] [--port 27400]

Prints JSON: p50/p95 in ms of `Status` over one open channel, of the CLI's whole
`status` and `restart node.west` (a fresh process each: Python's start included), for
both transports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msgctl.agent import transport  # noqa: E402
from msgctl.home import Home  # noqa: E402
from msgctl.supervisor import client  # noqa: E402

MSGCTL = str(Path(sys.executable).parent / "msgctl")


def topology(port: int, agents: bool) -> str:
    def region(name: str, host: str) -> str:
        agent = f"\n    agent: {host}:{port + 40}" if agents else ""
        return f"  - name: {name}\n    host: {host}\n    gateway: {{port: {port}}}{agent}\n"

    return ("name: agent-roundtrip\nbackend: embedded\nregions:\n"
            + region("east", "127.0.0.1") + region("west", "127.0.0.2"))


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return {"p50_ms": round(statistics.median(xs), 1),
            "p95_ms": round(xs[max(0, int(len(xs) * 0.95) - 1)], 1), "n": n}


def cli(*args: str) -> None:
    subprocess.run([MSGCTL, *args], check=True, capture_output=True, timeout=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--port", type=int, default=27400)
    a = p.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="agent-rt-") as tmp:
        for label, agents, port in (("agents", True, a.port), ("socket", False, a.port + 100)):
            root = Path(tmp) / label
            root.mkdir()
            (root / "t.yaml").write_text(topology(port, agents))
            home = root / "home"
            cli("up", "-t", str(root / "t.yaml"), "--home", str(home))
            try:
                h = Home(home)
                if agents:
                    with transport.Agents(h) as conn:
                        west = conn.by_region("west")
                        conn.status(west)
                        rpc = timed(lambda c=conn, w=west: c.status(w), a.calls)
                else:
                    rpc = timed(lambda h=h: client.socket_command(h, "status"), a.calls)
                out[label] = {
                    "status_call": rpc,
                    "cli_status": timed(lambda h=home: cli("status", "--json", "--home",
                                                           str(h)), 5),
                    "cli_restart_node_west": timed(lambda h=home: cli(
                        "restart", "node.west", "--home", str(h)), a.restarts),
                }
            finally:
                subprocess.run([MSGCTL, "down", "--home", str(home)], capture_output=True,
                               timeout=120)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
