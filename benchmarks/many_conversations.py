"""Opening and resuming a session of a user in 10,000 conversations, and what others feel.

    python benchmarks/many_conversations.py [--conversations 10000] [--unread 200] [--json]

Starts the embedded default in a temporary home (`msgctl up`), then seeds its
SQLite file directly (creating 10,000 conversations through the protocol would
take minutes: every create checks the members' conversation counts) with two
users in `--conversations` 1:1 conversations each, one message in every
conversation, and:

- `resume`: user R's phone, already registered with every conversation acked
  up to seq 1; `--unread` of R's conversations (spread over the list, the last
  one included) hold a second message. Measured: connect -> hello, and connect
  -> the last of those messages received (the resume is done).
- `sync_all`: R's phone then asks `sync` of everything: request -> `synced`.
- `new_device`: user N's phone, never seen: connect -> hello (the baseline is
  every conversation's head).
- `one_conversation`: a user in one conversation with one unread message
  reconnects `--small-runs` times: connect -> that message, median and max.

Meanwhile another user, in a process of its own (so that this one's work on
the big user's frames does not count), pings the gateway back to back, one
ping in flight; each phase reports the worst and the 99th percentile round
trip seen while it ran: how long the gateway's event loop stalled for
everybody else. The kernel's heads are cold for both big users (nothing has
touched their conversations), so every head comes from the store. Prints JSON
with --json, else one line per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msgctl import wire  # noqa: E402

if TYPE_CHECKING:
    from tests.conftest import Deployment

TIMEOUT = 120.0  # longest wait for any one frame
TOKEN_ENV = "MSGCTL_BENCH_TOKEN"  # the pinger's token: not on its command line


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def seed(db: Path, users: list[str], count: int, unread: set[int], small: str) -> None:
    """Conversations, messages and R's registered device straight into the region's file
    (the schema is the running node's; one transaction)."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    now = int(time.time() * 1000)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for u, user in enumerate(users):
            convs = [f"{user}-c{i:05d}" for i in range(count)]
            peers = [f"{user}-peer{i:05d}" for i in range(count)]
            conn.executemany("INSERT INTO conversations VALUES (?,?,?,?,?)",
                             [(c, json.dumps([user, p]), "local", None, now)
                              for c, p in zip(convs, peers, strict=True)])
            conn.executemany("INSERT INTO members VALUES (?,?)",
                             [(m, c) for c, p in zip(convs, peers, strict=True)
                              for m in (user, p)])
            rows = [(c, 1, 0, f"{c}-m1", "c1", p, "web", now, "text", "hello", None)
                    for c, p in zip(convs, peers, strict=True)]
            if u == 0:  # R: unread second messages, and a phone that acked every first one
                rows += [(convs[i], 2, 1, f"{convs[i]}-m2", "c2", peers[i], "web", now, "text",
                          "unread", None) for i in sorted(unread)]
                conn.execute("INSERT INTO devices VALUES (?,?,?)", (user, "phone", now // 1000))
                conn.executemany("INSERT INTO cursors VALUES (?,?,?,?)",
                                 [(user, "phone", c, 1) for c in convs])
            conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        conv = f"{small}-c0"
        conn.execute("INSERT INTO conversations VALUES (?,?,?,?,?)",
                     (conv, json.dumps([small, f"{small}-peer"]), "local", None, now))
        conn.executemany("INSERT INTO members VALUES (?,?)",
                         [(small, conv), (f"{small}-peer", conv)])
        conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         [(conv, s, s - 1, f"{conv}-m{s}", f"c{s}", f"{small}-peer", "web",
                           now, "text", "hi", None) for s in (1, 2)])
        conn.execute("INSERT INTO devices VALUES (?,?,?)", (small, "phone", now // 1000))
        conn.execute("INSERT INTO cursors VALUES (?,?,?,?)", (small, "phone", conv, 1))
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- the other user: a process of its own ----------------------------------------------
async def ping_forever(url: str, token: str) -> list[tuple[float, float]]:
    """Ping back to back until SIGTERM; (sent at, round trip) in monotonic seconds."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ws, _ = await wire.open_session(url, token)
    print("ready", flush=True)
    samples: list[tuple[float, float]] = []
    n = 0
    while not stop.is_set():
        n += 1
        t0 = time.monotonic()
        await wire.call(ws, {"t": "ping", "id": f"p{n}"}, TIMEOUT)
        samples.append((t0, time.monotonic() - t0))
        await asyncio.sleep(0.002)
    await ws.close()
    return samples


class Pinger:
    """The pinging process; its samples come back when it is stopped."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.samples: list[tuple[float, float]] = []

    @classmethod
    async def start(cls, url: str, token: str) -> Pinger:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--ping", url, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, TOKEN_ENV: token})
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert line.strip() == b"ready", line
        return cls(proc)

    async def stop(self) -> None:
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self.proc.stdout.read(), TIMEOUT)
        await self.proc.wait()
        self.samples = [(t, r) for t, r in json.loads(out)]

    def between(self, start: float, end: float) -> dict[str, float]:
        """The pings sent in [start, end], and one in flight at `start`."""
        rtts = sorted(r for t, r in self.samples if start <= t <= end or
                      (t < start and t + r > start))
        if not rtts:
            return {"pings": 0}
        return {"pings": len(rtts), "ping_p50_ms": round(rtts[len(rtts) // 2] * 1000, 1),
                "ping_p99_ms": round(rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1000, 1),
                "ping_max_ms": round(rtts[-1] * 1000, 1)}


# -- the measured user -----------------------------------------------------------------
async def open_and_receive(dep: Deployment, user: str, device: str,
                           want: set[tuple[str, int]]) -> tuple[Any, float, float]:
    """Connect; (socket, s to hello, s to the last of `want` (conv, seq) received)."""
    t0 = time.monotonic()
    ws, _ = await wire.open_session(dep.ws_url, dep.token(user, device),
                                    hello_timeout=TIMEOUT, max_size=2**24)
    hello = time.monotonic() - t0
    missing = set(want)
    while missing:
        frame = wire.decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame.get("t") == "msg":
            missing.discard((frame["conv"], frame["seq"]))
    return ws, hello, time.monotonic() - t0


async def drive(dep: Deployment, count: int, unread_n: int, small_runs: int
                ) -> dict[str, Any]:
    big_r, big_n, small, other = "bench-r", "bench-n", "bench-small", "bench-other"
    step = max(1, count // unread_n)
    unread = {count - 1 - i * step for i in range(min(unread_n, count))}
    t0 = time.monotonic()
    seed(dep.home / "data" / "local.db", [big_r, big_n], count, unread, small)
    out: dict[str, Any] = {"conversations": count, "unread": len(unread),
                           "seed_s": round(time.monotonic() - t0, 2)}
    marks: dict[str, tuple[float, float]] = {}  # phase -> (start, end)
    pinger = await Pinger.start(dep.ws_url, dep.token(other, "phone"))
    start = time.monotonic()
    await asyncio.sleep(1.0)
    marks["idle"] = (start, time.monotonic())

    progress("resume")
    # resume of a known device: cold heads for all of R's conversations
    start = time.monotonic()
    want = {(f"{big_r}-c{i:05d}", 2) for i in unread}
    ws, hello, done = await open_and_receive(dep, big_r, "phone", want)
    marks["resume"] = (start, time.monotonic())
    out["resume"] = {"hello_ms": round(hello * 1000, 1), "done_ms": round(done * 1000, 1)}
    await asyncio.sleep(0.5)  # let it settle

    progress("sync")
    # sync of everything on that connection (one page per conversation with news)
    start = time.monotonic()
    await ws.send(wire.encode({"t": "sync", "id": "s1"}))
    batches = 0
    while True:
        frame = wire.decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame.get("id") == "s1":
            if frame.get("t") == "synced":
                break
            batches += 1
    marks["sync_all"] = (start, time.monotonic())
    out["sync_all"] = {"synced_ms": round((time.monotonic() - start) * 1000, 1),
                       "batches": batches}
    await ws.close()
    await asyncio.sleep(0.5)

    progress("new device")
    # a device never seen: its baseline is every conversation's head (cold)
    start = time.monotonic()
    ws, hello, _ = await open_and_receive(dep, big_n, "phone", set())
    marks["new_device"] = (start, time.monotonic())
    out["new_device"] = {"hello_ms": round(hello * 1000, 1)}
    await ws.close()
    await asyncio.sleep(0.5)

    progress("one conversation")
    # a user in one conversation: the common case must not get slower
    times: list[float] = []
    for _ in range(small_runs):
        ws, _, done = await open_and_receive(dep, small, "phone", {(f"{small}-c0", 2)})
        times.append(done * 1000)
        await ws.close()
        await asyncio.sleep(0.05)
    out["one_conversation"] = {"runs": small_runs,
                               "done_p50_ms": round(statistics.median(times), 2),
                               "done_max_ms": round(max(times), 2)}
    await pinger.stop()
    for phase, (start, end) in marks.items():
        out.setdefault(phase, {}).update(pinger.between(start, end))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--unread", type=int, default=200,
                        help="conversations of the resuming user with a message to fill")
    parser.add_argument("--small-runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ping", metavar="URL", help=argparse.SUPPRESS)  # the pinger
    args = parser.parse_args()
    if args.ping:
        print(json.dumps(asyncio.run(ping_forever(args.ping, os.environ[TOKEN_ENV]))))
        return 0
    # here, not at the top: it makes a test CA, which the pinger process must not
    from tests.conftest import start_deployment

    with tempfile.TemporaryDirectory(prefix="msgctl-many-") as tmp:
        dep = start_deployment(Path(tmp), limits={
            "max_conversations_per_user": max(10_000, args.conversations)})
        try:
            result = asyncio.run(drive(dep, args.conversations, args.unread, args.small_runs))
        finally:
            dep.down()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:18} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
