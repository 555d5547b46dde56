"""The ceiling: a bare `websockets` relay doing the gateway's relay work, minus the rest.

It authenticates the same JWTs, parses each frame, numbers messages per
conversation in memory, forwards `msg` to the recipient and answers `sent`,
and reads acks; no persistence, no ordering machinery, no receipts. A
conversation's id is its recipient's user id, so routing is one dict lookup.
Run as ``python -m msgctl.bench.relay HOST PORT SECRET``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from runtime import auth


async def main(host: str, port: int, secret: str) -> None:
    users: dict[str, ServerConnection] = {}
    seqs: dict[str, int] = defaultdict(int)

    async def handler(ws: ServerConnection) -> None:
        token = parse_qs(urlsplit(ws.request.path).query).get("token", [""])[0]
        ident = auth.verify(secret, token)
        users[ident.user] = ws
        await ws.send(json.dumps({"t": "hello", "user": ident.user, "device": ident.device}))
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("t") != "send":
                    continue
                conv = frame["conv"]
                seqs[conv] += 1
                seq = seqs[conv]
                ts = int(time.time() * 1000)
                peer = users.get(conv)
                if peer is not None:
                    await peer.send(json.dumps({
                        "t": "msg", "conv": conv, "seq": seq, "prev": seq - 1, "mid": str(seq),
                        "cid": frame["cid"], "from": ident.user, "from_device": ident.device,
                        "ts": ts, "kind": frame["kind"], "body": frame["body"]}))
                await ws.send(json.dumps({"t": "sent", "conv": conv, "cid": frame["cid"],
                                         "seq": seq, "prev": seq - 1, "ts": ts}))
        except ConnectionClosed:
            pass  # the bench's clients drop their connections without a handshake
        finally:
            if users.get(ident.user) is ws:
                del users[ident.user]

    async with serve(handler, host, port, compression=None, ping_interval=None) as server:
        print("ready", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    except ImportError:  # pragma: no cover
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
