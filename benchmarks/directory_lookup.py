"""The router's CPU to find a round's users on the gateways: route hashes against a HVALS
of each user's session hash.

    python benchmarks/directory_lookup.py [--users 200] [--gateways 2] [--rounds 300]
        [--json]

For every round it routes, the cluster router asks the session directory which of
the region's gateways hold a session of each member of the round's conversations.
It used to read each user's session hash (`sessions:{user}`, a HVALS per user in one
pipeline, and parse each field's gateway and timestamp); now each gateway keeps a
route hash of its users (`route:{region}:{gateway}`) and the router sends one HMGET
per gateway. This starts a private redis-server (the OS's binary, plain TCP, on a
free port, removed at the end), has `--gateways` real `RedisDirectory` gateways
register `--users` users (one device each, spread over the gateways), and reports
the calling process's CPU time (user + system) per lookup of all users, for each way,
and their ratio, from one run. Redis's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402

from msgctl.infra import redis as redis_engine  # noqa: E402
from runtime.adapters.cluster.redis_bus import RedisDirectory, _live_gateway  # noqa: E402

REGION = "bench"


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def per_user_hashes(client: aioredis.Redis, users: list[str]) -> dict[str, list[str]]:
    """The lookup as it was: a HVALS of each user's session hash, fields parsed here."""
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hvals(f"sessions:{user}")
    now = time.time()
    out: dict[str, list[str]] = defaultdict(list)
    for user, values in zip(users, await pipe.execute(), strict=True):
        for g in {_live_gateway(v, now) for v in values} - {None}:
            out[g].append(user)  # type: ignore[index]
    return dict(out)


async def _measure(port: int, users: int, gateways: int, rounds: int) -> dict[str, Any]:
    client = aioredis.Redis(host="127.0.0.1", port=port)
    ids = [f"gateway-{i + 1}" for i in range(gateways)]
    writers = [RedisDirectory(client, g, region=REGION) for g in ids]
    for w in writers:
        await w.start()
    names = [f"user-{i:05d}" for i in range(users)]
    for i, user in enumerate(names):
        g = i % gateways
        writers[g].register(user, "phone", f"s{i}", ids[g])
    for w in writers:
        assert await w.settle(10)
    router = RedisDirectory(client, region=REGION, gateways=ids)

    async def route_hashes(_: aioredis.Redis, users: list[str]) -> dict[str, list[str]]:
        return await router.gateways_of(users)

    expected = await per_user_hashes(client, names)
    out: dict[str, Any] = {"users": users, "gateways": gateways, "rounds": rounds}
    for name, lookup in (("per_user_hashes", per_user_hashes), ("route_hashes", route_hashes)):
        got = await lookup(client, names)
        assert {g: sorted(u) for g, u in got.items()} == \
            {g: sorted(u) for g, u in expected.items()}, name
        for _ in range(20):  # warm
            await lookup(client, names)
        t0 = _cpu()
        for _ in range(rounds):
            await lookup(client, names)
        out[f"{name}_us_cpu"] = round((_cpu() - t0) / rounds * 1e6, 1)
    out["ratio"] = round(out["route_hashes_us_cpu"] / out["per_user_hashes_us_cpu"], 3)
    for w in writers:
        await w.stop()
    await client.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="msgctl-bench-redis-"))
    argv = redis_engine.argv(redis_engine.binary(), "127.0.0.1", port, data)
    argv[argv.index("--appendonly") + 1] = "no"
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        result = asyncio.run(_measure(port, args.users, args.gateways, args.rounds))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.users} users over {args.gateways} gateways, {args.rounds} lookups each:")
    print(f"  HVALS per user:   {result['per_user_hashes_us_cpu']:8.1f} us of CPU per lookup")
    print(f"  route hashes:     {result['route_hashes_us_cpu']:8.1f} us "
          f"(ratio {result['ratio']})")


if __name__ == "__main__":
    main()
