"""The same quick 1:1 burst against the embedded default and a one-region cluster.

    python benchmarks/families.py [--rates 250,500,1000] [--seconds 3] [--json]

Starts both deployments in temporary homes (the cluster one with `msgctl up`
on the test suite's one-region topology on free ports: real Kafka, Cassandra,
Redis and S3Proxy, two gateways, TLS, the tests' limits and the engines' default
heaps; the JVMs warmed up before `up` reports ready, as with the shipped
topologies), measures the cluster's time to RUNNING
and the total RSS of every supervised process of each, then (after one
unmeasured 10 s warm-up step) drives the same open-loop 1:1 traffic
(`msgctl bench`'s client workers) at each rate: send->sent and send->deliver
p50/p99 and delivered msgs/s. Prints a table, or
JSON with --json. Both stacks are taken down at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msgctl.bench import runner  # noqa: E402
from msgctl.home import Home  # noqa: E402
from tests.conftest import (  # noqa: E402
    Deployment,
    free_block,
    msgctl,
    write_cluster_topology,
    write_topology,
)


def total_rss(home: Path) -> tuple[int, dict[str, float]]:
    state = json.loads((home / "run" / "state.json").read_text())
    per: dict[str, float] = {}
    for p in state["programs"]:
        if p.get("pid"):
            per[p["name"]] = runner.rss_bytes(p["pid"]) / 2**20
    return int(sum(per.values())), {k: round(v, 1) for k, v in per.items()}


def start(root: Path, family: str) -> tuple[Deployment, float]:
    root.mkdir(parents=True)
    base = free_block(30)
    if family == "cluster":
        topo = write_cluster_topology(root / "topology.yaml", base)
        # the tests' topology skips the JVMs' warm-up; here `up` warms them before it
        # reports ready, as it does for the shipped topologies
        spec = yaml.safe_load(topo.read_text())
        for engine in spec["regions"][0]["engines"].values():
            engine.pop("warmup_s", None)
        topo.write_text(yaml.safe_dump(spec))
        dep = Deployment(root / "home", topo, base, gateways=2, family="cluster")
    else:
        topo = write_topology(root / "topology.yaml", base)
        dep = Deployment(root / "home", topo, base)
    t0 = time.monotonic()
    msgctl("up", "--home", str(dep.home), "-t", str(topo), timeout=900)
    return dep, time.monotonic() - t0


def burst(dep: Deployment, rates: list[float], seconds: float) -> list[dict[str, Any]]:
    target = runner.Target(dep.ws_url, dep.http_url, 0, Home(dep.home).secret())
    s = runner.Settings.quick()
    s.step_seconds = seconds
    s.warmup_seconds = 1.0
    # a fresh JVM (Cassandra, Kafka) compiles its hot paths under the first traffic:
    # one unmeasured step first, so the steps compare steady states
    runner.run_step(target, s, rates[0], relay=False, duration=10.0)
    out = []
    for rate in rates:
        step = runner.run_step(target, s, rate, relay=False)
        out.append({"rate": rate, "achieved_msgs_s": step.achieved,
                    "send_sent_p50_ms": step.sent_p50_ms, "send_sent_p99_ms": step.sent_p99_ms,
                    "send_deliver_p50_ms": step.p50_ms, "send_deliver_p99_ms": step.p99_ms,
                    "delivered": step.delivered, "offered": step.offered,
                    "errors": step.errors, "ok": step.ok})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="250,500,1000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    root = Path(tempfile.mkdtemp(prefix="msgctl-families-"))
    result: dict[str, Any] = {"rates": rates, "seconds": args.seconds}
    deps: list[Deployment] = []
    try:
        for family in ("embedded", "cluster"):
            dep, up_s = start(root / family, family)
            deps.append(dep)
            rss, per = total_rss(dep.home)
            steps = burst(dep, rates, args.seconds)
            result[family] = {"up_seconds": round(up_s, 1), "rss_mib": rss,
                              "rss_per_process_mib": per, "steps": steps,
                              "rss_mib_after": total_rss(dep.home)[0]}
            msgctl("down", "--home", str(dep.home), timeout=300)
            deps.remove(dep)
    finally:
        for dep in deps:
            msgctl("down", "--home", str(dep.home), check=False, timeout=300)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title="quick 1:1 burst, embedded vs one-region cluster (one run)")
    for col in ("family", "rate", "msgs/s", "sent p50", "sent p99", "deliver p50",
                "deliver p99", "errors"):
        table.add_column(col, justify="right")
    for family in ("embedded", "cluster"):
        for st in result[family]["steps"]:
            table.add_row(family, f"{st['rate']:.0f}", f"{st['achieved_msgs_s']:.0f}",
                          f"{st['send_sent_p50_ms']:.2f}", f"{st['send_sent_p99_ms']:.2f}",
                          f"{st['send_deliver_p50_ms']:.2f}", f"{st['send_deliver_p99_ms']:.2f}",
                          str(st["errors"]))
    console = Console()
    console.print(table)
    for family in ("embedded", "cluster"):
        r = result[family]
        console.print(f"{family}: up in {r['up_seconds']} s, total RSS {r['rss_mib']} MiB "
                      f"(after traffic {r['rss_mib_after']} MiB)")


if __name__ == "__main__":
    main()
