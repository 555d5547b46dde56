"""The gateway's CPU per frame written to a device: at once, or through a writer task.

    python benchmarks/gateway_writes.py [--clients 200] [--rounds 100] [--json]

A gateway writes most frames (a `msg`, a `sent`) to a connection with nothing
else queued. `Session` then writes the frame at once (`Connection.send_text_now`);
before, each such frame started a writer task that awaited websockets' `send`.
This starts a real `websockets` server with the gateway's `Connection` and
`Session` in this process, `--clients` clients in a second process, and has the
server queue two frames per client per round (`--rounds` rounds, 2 ms apart),
first with the write at once turned off, then on. It reports the server
process's CPU time (user + system, from `getrusage`) per frame for each, and
their ratio, from one run. Plain TCP: TLS would add the same cost to both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.asyncio.server import ServerConnection, serve  # noqa: E402

from runtime.gateway.connection import Connection  # noqa: E402
from runtime.gateway.session import Session  # noqa: E402

FRAME = ('{"t":"msg","conv":"c-0123456789","seq":12345,"prev":12344,"from":"u1",'
         '"body":"' + "b" * 100 + '"}')


def _clients(port: int, count: int, frames: int, done: Any) -> None:
    async def one() -> None:
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            for _ in range(frames):
                await ws.recv()

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(main())
    done.put(True)


async def _measure(at_once: bool, clients: int, rounds: int) -> dict[str, Any]:
    sessions: list[Session] = []
    ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, Connection)
        if not at_once:
            ws.send_text_now = lambda text: False  # type: ignore[method-assign]
        sessions.append(Session(ws, None, 1 << 22, None))  # type: ignore[arg-type]
        if len(sessions) == clients:
            ready.set()
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, create_connection=Connection,
                     compression=None, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        done: Any = mp.Queue()
        proc = mp.Process(target=_clients, args=(port, clients, 2 * rounds, done))
        proc.start()
        await ready.wait()
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(rounds):
            for s in sessions:
                s.enqueue_text(FRAME, "msg")
                s.enqueue_text(FRAME, "sent")
            await asyncio.sleep(0.002)
        while any(s.queued_bytes for s in sessions):
            await asyncio.sleep(0.001)
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
        await asyncio.get_running_loop().run_in_executor(None, done.get)
        proc.join()
    frames = 2 * rounds * clients
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"frames": frames, "cpu_us_per_frame": round(cpu / frames * 1e6, 2),
            "seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # the gateway runs on uvloop where it can
        run = asyncio.run
    task = run(_measure(False, args.clients, args.rounds))
    now = run(_measure(True, args.clients, args.rounds))
    out = {"writer_task": task, "at_once": now,
           "ratio": round(now["cpu_us_per_frame"] / task["cpu_us_per_frame"], 2)}
    if args.json:
        print(json.dumps(out))
        return
    print(f"writer task per frame: {task['cpu_us_per_frame']} us of server CPU")
    print(f"at once:               {now['cpu_us_per_frame']} us "
          f"({out['ratio']} of the above, {now['frames']} frames each)")


if __name__ == "__main__":
    main()
