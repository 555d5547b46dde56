"""Two and three regions on this machine: startup, memory, cross-region latency, link lag.

    python benchmarks/regions.py [--regions 2,3] [--messages 200] [--burst 2000]
                                 [--rate 500 --seconds 20 --warm 10] [--json]

For each count, `msgctl up` of the shipped regions/two-region.yaml or
three-region.yaml (moved by --port-offset, so a running default deployment is
left alone) in a temporary home: seconds until every program is RUNNING and
the total RSS of all of them. On two regions, also:

- send->deliver p50/p99 of paced 1:1 messages (one every 20 ms) in a
  conversation homed in us-east: receiver in us-east (same region), receiver in
  eu-west (delivered through MirrorMaker 2), and sender in eu-west (the send
  forwarded to us-east's ingress, `sent` back through the mirror);
- replication lag per link at rest (`msgctl status`'s measure, five samples) and
  under a burst: --burst messages from us-east devices as fast as a window of 64
  unacknowledged sends allows, over 8 1:1 conversations to devices in eu-west,
  while the lag is
  sampled every half second, and the messages/s delivered to eu-west;
- with --rate R: open-loop 1:1 traffic at R msgs/s for --seconds, senders on
  us-east's gateway and receivers on eu-west's (conversations homed in us-east,
  so every message crosses MirrorMaker 2), the send->deliver and send->sent
  percentiles, and each link's replication lag sampled every half second
  meanwhile (p50/p99/max), over Kafka clients kept between samples. The step
  follows --warm seconds (default 10) of the same traffic, not measured: fresh
  JVMs compile their hot paths under the first traffic.

Every deployment is taken down at the end. Prints a summary, or JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msgctl import wire  # noqa: E402
from msgctl.home import Home  # noqa: E402
from msgctl.infra import replication  # noqa: E402
from msgctl.tls import trust  # noqa: E402
from runtime import auth  # noqa: E402
from tests.conftest import msgctl  # noqa: E402
from tests.wsclient import Client  # noqa: E402

OFFSET = 20_000
TOPOLOGIES = {2: "two-region.yaml", 3: "three-region.yaml"}
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, int(len(xs) * q))], 1) if xs else float("nan")


def total_rss_mib(home: Path) -> tuple[int, dict[str, int]]:
    state = json.loads((home / "run" / "state.json").read_text())
    per: dict[str, int] = {}
    for p in state["programs"]:
        if p.get("pid"):
            try:
                status = Path(f"/proc/{p['pid']}/status").read_text()
                per[p["name"]] = int(status.split("VmRSS:")[1].split()[0]) // 1024
            except (OSError, IndexError, ValueError):
                pass
    return sum(per.values()), per


class Stack:
    def __init__(self, home: Path, count: int) -> None:
        self.home = home
        self.count = count
        self.port = 7400 + OFFSET
        self.secret = ""
        self.urls: list[str] = []

    def up(self) -> float:
        t0 = time.monotonic()
        msgctl("up", "--home", str(self.home), "-t", str(ROOT / "regions" / TOPOLOGIES[self.count]),
               "--port-offset", str(OFFSET), timeout=1200)
        self.secret = Home(self.home).secret()
        deployment = json.loads((self.home / "deployment.json").read_text())
        wire.set_trust(trust(deployment))  # the shipped topologies serve TLS from the home's CA
        self.urls = [r["ws_url"] for r in deployment["regions"]]
        return time.monotonic() - t0

    def down(self) -> None:
        msgctl("down", "--home", str(self.home), check=False, timeout=600)

    def url(self, i: int) -> str:
        return self.urls[i]

    def client(self, i: int, user: str, device: str = "phone") -> Any:
        return Client.open(self.url(i), auth.issue(self.secret, user, device, 3600))

    def regions(self) -> list[dict[str, Any]]:
        return json.loads((self.home / "deployment.json").read_text())["regions"]


async def paced(stack: Stack, sender: int, receiver: int, n: int) -> dict[str, float]:
    """1:1 in a conversation homed in region 0, one message every 20 ms."""
    alice, bob = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    creator = await stack.client(0, alice, "creator")
    s = await stack.client(sender, alice)
    r = await stack.client(receiver, bob)
    conv = (await creator.create([bob]))["conv"]
    await s.send_text(conv, "warm", timeout=30)
    await r.wait_msgs(conv, 1, timeout=30)
    sent, delivered = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await s.send_text(conv, f"c{i}", timeout=30)
        sent.append((time.perf_counter() - t0) * 1000)
        await r.wait_msgs(conv, i + 2, timeout=30)
        delivered.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - t0)))
    for c in (creator, s, r):
        await c.close()
    return {"send_sent_p50_ms": pct(sent, 0.5), "send_sent_p99_ms": pct(sent, 0.99),
            "send_deliver_p50_ms": pct(delivered, 0.5),
            "send_deliver_p99_ms": pct(delivered, 0.99), "messages": n}


def lag_now(reader: replication.LagReader) -> dict[str, Any]:
    """Each link's replication lag in ms ("source->target": lag, None when unknown)."""
    return {f"{x.source}->{x.target}": x.lag_ms for x in reader.links()}


def lag_samples(stack: Stack, count: int, every: float) -> list[dict[str, Any]]:
    out = []
    with replication.LagReader(stack.regions()) as reader:
        for _ in range(count):
            out.append(lag_now(reader))
            time.sleep(every)
    return out


class LagSampler:
    """Each link's replication lag (`msgctl status`'s measure) every half second, in a
    thread, until `stop`, over Kafka clients kept between samples (new ones each time
    loaded the brokers with TLS handshakes: a third of a broker's CPU at 500 msgs/s)."""

    def __init__(self, stack: Stack) -> None:
        self.reader = replication.LagReader(stack.regions())
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            self.samples.append(lag_now(self.reader))
            self._stop.wait(max(0.0, 0.5 - (time.monotonic() - t)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.reader.close()

    def per_link(self) -> dict[str, dict[str, float]]:
        out = {}
        for link in (self.samples[0] if self.samples else {}):
            xs = [x[link] for x in self.samples if x.get(link) is not None]
            if xs:
                out[link] = {"p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99),
                             "max_ms": max(xs), "samples": len(xs)}
        return out


def at_rate(stack: Stack, rate: float, seconds: float, warm: float = 0.0) -> dict[str, Any]:
    """Open-loop traffic from us-east's gateway to receivers on eu-west's (see the module
    docstring), with the links' lag sampled meanwhile; after `warm` seconds of the same
    traffic, not measured, when more than 0."""
    from msgctl.bench import runner
    from msgctl.tls import trust_children

    regions = stack.regions()
    trust_children(json.loads((stack.home / "deployment.json").read_text()))
    target = runner.Target(regions[0]["ws_url"], regions[0]["http_url"], 0, stack.secret,
                           receiver_url=regions[1]["ws_url"])
    settings = runner.Settings.quick()
    settings.warmup_seconds = 2.0
    if warm > 0:
        # fresh JVMs compile their hot paths under the first traffic (benchmarks/families.py
        # does the same): the measured step is then a steady state, not the first minute
        runner.run_step(target, settings, rate, relay=False, duration=warm)
    lag = LagSampler(stack)
    try:
        step = runner.run_step(target, settings, rate, relay=False, duration=seconds)
    finally:
        lag.stop()
    return {"rate": rate, "seconds": seconds, "achieved_msgs_s": step.achieved,
            "send_deliver_p50_ms": step.p50_ms, "send_deliver_p99_ms": step.p99_ms,
            "send_sent_p50_ms": step.sent_p50_ms, "send_sent_p99_ms": step.sent_p99_ms,
            "delivered": step.delivered, "offered": step.offered, "errors": step.errors,
            "lag": lag.per_link()}


async def burst(stack: Stack, n: int, pairs: int = 8) -> dict[str, Any]:
    """`n` sends from us-east devices, 64 in flight at most, to devices in eu-west, over
    `pairs` 1:1 conversations (one conversation is bounded by its own sequencing)."""
    senders, receivers, convs = [], [], []
    for _ in range(pairs):
        alice, bob = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
        s = await stack.client(0, alice)
        r = await stack.client(1, bob)
        conv = (await s.create([bob]))["conv"]
        await s.send_text(conv, "warm", timeout=30)
        await r.wait_msgs(conv, 1, timeout=30)
        senders.append(s)
        receivers.append(r)
        convs.append(conv)
    window = asyncio.Semaphore(64)
    lag = LagSampler(stack)

    async def one(i: int) -> None:
        async with window:
            await senders[i % pairs].send_text(convs[i % pairs], f"c{i}", timeout=60)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    send_s = time.perf_counter() - t0
    for k in range(pairs):
        await receivers[k].wait_msgs(convs[k], len(range(k, n, pairs)) + 1, timeout=300)
    all_s = time.perf_counter() - t0
    lag.stop()
    for c in (*senders, *receivers):
        await c.close()
    per_link = lag.per_link()
    return {"messages": n, "send_seconds": round(send_s, 2),
            "delivered_all_seconds": round(all_s, 2),
            "msgs_per_s": round(n / all_s, 1),
            "max_lag_ms": {k: v["max_ms"] for k, v in per_link.items()},
            "lag_samples": len(lag.samples)}


def measure(count: int, messages: int, burst_n: int, rate: float = 0.0,
            seconds: float = 20.0, warm: float = 10.0) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"msgctl-regions{count}-"))
    stack = Stack(root / "home", count)
    out: dict[str, Any] = {"regions": count, "topology": TOPOLOGIES[count]}
    try:
        out["up_seconds"] = round(stack.up(), 1)
        time.sleep(5)  # let the mirrors settle before the memory is read
        out["rss_mib"], out["rss_per_program_mib"] = total_rss_mib(stack.home)
        out["lag_at_rest"] = lag_samples(stack, 5, 1.0)
        if count >= 2:
            asyncio.run(paced(stack, 0, 1, messages // 2))  # warm-up, not counted
            out["same_region"] = asyncio.run(paced(stack, 0, 0, messages))
            out["cross_region_receiver"] = asyncio.run(paced(stack, 0, 1, messages))
            out["cross_region_sender"] = asyncio.run(paced(stack, 1, 0, messages))
        if count == 2 and rate:
            out["at_rate"] = at_rate(stack, rate, seconds, warm)
        if count == 2 and burst_n:
            out["burst"] = asyncio.run(burst(stack, burst_n))
        out["rss_after_mib"], _ = total_rss_mib(stack.home)
    finally:
        stack.down()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", default="2,3")
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="msgs/s of open-loop cross-region traffic (two regions; 0: none)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warm", type=float, default=10.0,
                    help="seconds of the --rate traffic before the measured step, not "
                         "measured (0: measure the first traffic at that rate)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.warm < 0:
        ap.error("--warm must be 0 or more")
    results = [measure(int(c), args.messages, args.burst, args.rate, args.seconds, args.warm)
               for c in args.regions.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['regions']} regions: up {r['up_seconds']} s, RSS {r['rss_mib']} MiB "
              f"(after traffic {r['rss_after_mib']} MiB)")
        rest = [v for s in r["lag_at_rest"] for v in s.values() if v is not None]
        print(f"  lag at rest: median {statistics.median(rest) if rest else '-'} ms")
        for key in ("same_region", "cross_region_receiver", "cross_region_sender"):
            if key in r:
                x = r[key]
                print(f"  {key}: send->sent p50/p99 {x['send_sent_p50_ms']}/"
                      f"{x['send_sent_p99_ms']} ms, send->deliver p50/p99 "
                      f"{x['send_deliver_p50_ms']}/{x['send_deliver_p99_ms']} ms")
        if "at_rate" in r:
            a = r["at_rate"]
            print(f"  at {a['rate']:.0f} msgs/s for {a['seconds']:.0f} s (us-east -> eu-west): "
                  f"send->deliver p50/p99 {a['send_deliver_p50_ms']}/"
                  f"{a['send_deliver_p99_ms']} ms, {a['delivered']}/{a['offered']} "
                  f"delivered; lag p50/p99 {a['lag']}")
        if "burst" in r:
            b = r["burst"]
            print(f"  burst of {b['messages']}: {b['msgs_per_s']} msgs/s delivered, "
                  f"max lag {b['max_lag_ms']}")


if __name__ == "__main__":
    main()
