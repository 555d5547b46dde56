"""Push end-to-end latency against the local FCM and APNs stand-ins.

    python benchmarks/push_latency.py [--messages 300] [--rate 50] [--json]

Starts the FCM (HTTP/1.1) and APNs (HTTP/2) stand-ins and an embedded deployment
(`msgctl up`) whose topology points its push section at them, registers one
offline Android (FCM) and one offline iOS (APNs) device for a recipient, then
sends messages at a steady rate from an online sender. For every notification:
event -> provider request = the stand-in's arrival time minus the message's
sequenced `ts` (same host clock, ms resolution), and client send -> provider
request. Prints p50/p99/max per provider (JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Deployment, free_port, msgctl, write_topology  # noqa: E402
from tests.standins import Standins  # noqa: E402
from tests.wsclient import Client  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2) if s else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 0.50), "p99_ms": pct(values, 0.99),
            "max_ms": round(max(values), 2) if values else float("nan")}


async def drive(dep: Deployment, s: Standins, messages: int, rate: float) -> dict[str, Any]:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    a = await Client.open(dep.ws_url, dep.token(alice, "phone"))
    phone = await Client.open(dep.ws_url, dep.token(bob, "phone"))
    ipad = await Client.open(dep.ws_url, dep.token(bob, "ipad"))
    conv = (await a.create([bob]))["conv"]
    fcm_token, apns_token = f"fcm-{bob}", f"ab{uuid.uuid4().hex[:16]}"
    await phone.request({"t": "push_register", "platform": "fcm", "token": fcm_token})
    await ipad.request({"t": "push_register", "platform": "apns", "token": apns_token})
    await phone.close()
    await ipad.close()
    await asyncio.sleep(0.3)
    sent_at: dict[int, float] = {}
    for i in range(messages):
        t0 = time.time()
        frame = await a.send_text(conv, f"c{i}", f"message {i}")
        sent_at[int(frame["seq"])] = t0
        await asyncio.sleep(max(0.0, 1 / rate - (time.time() - t0)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
            len(s.fcm.script.for_token(fcm_token)) < messages or
            len(s.apns.script.for_token(apns_token)) < messages):
        await asyncio.sleep(0.1)
    await a.close()
    out: dict[str, Any] = {}
    for name, recs in (("fcm", s.fcm.script.for_token(fcm_token)),
                       ("apns", s.apns.script.for_token(apns_token))):
        from_event, from_send = [], []
        for r in recs:
            data = r.body["message"]["data"] if name == "fcm" else r.body
            seq, ts = int(data["seq"]), int(data["ts"])
            from_event.append((r.at - ts / 1000) * 1000)
            from_send.append((r.at - sent_at[seq]) * 1000)
        out[name] = {"event_to_request": summary(from_event),
                     "send_to_request": summary(from_send),
                     "not_200": sum(1 for r in recs if r.status != 200)}
    out["violations"] = s.fcm.script.violations + s.apns.script.violations
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--rate", type=float, default=50.0, help="messages per second")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="msgctl-push-bench-") as tmp:
        root = Path(tmp)
        s = Standins.start(root / "standins")
        port = free_port()
        topo = write_topology(root / "topology.yaml", port)
        raw = yaml.safe_load(topo.read_text())
        raw["push"] = s.push_section()
        topo.write_text(yaml.safe_dump(raw))
        dep = Deployment(root / "home", topo, port)
        dep.up()
        try:
            result = asyncio.run(drive(dep, s, args.messages, args.rate))
        finally:
            msgctl("down", "--home", str(dep.home), check=False)
            s.stop()
    result |= {"messages": args.messages, "rate_per_s": args.rate, "family": "embedded"}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name in ("fcm", "apns"):
            e, c = result[name]["event_to_request"], result[name]["send_to_request"]
            print(f"{name:5} n={e['n']}  event->request p50 {e['p50_ms']} ms  p99 "
                  f"{e['p99_ms']} ms  (client send->request p50 {c['p50_ms']} p99 "
                  f"{c['p99_ms']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
