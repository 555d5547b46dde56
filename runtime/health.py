"""A tiny HTTP endpoint for runtime processes that have no gateway port.

Serves GET /healthz, /readyz (503 until every hosted runtime is ready) and
/metrics, which is all the supervisor and Prometheus need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from runtime.metrics import METRICS


class HealthServer:
    def __init__(self, host: str, port: int, region: str,
                 readiness: Callable[[], dict[str, str]]) -> None:
        self.host = host
        self.port = port
        self.region = region
        self.readiness = readiness
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(self._read_head(reader), 5)  # the whole head, bounded
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0].rstrip("/") if len(parts) >= 2 else ""
            status, ctype, body = self._route(path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # a bad or slow client gets nothing; the runtime carries on
        finally:
            writer.close()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> bytes:
        """The request line; the header lines after it are read and dropped (at most 100)."""
        line = await reader.readline()
        for _ in range(100):
            if await reader.readline() in (b"\r\n", b"\n", b""):
                return line
        raise ValueError("too many header lines")

    def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            return "200 OK", "application/json", json.dumps(
                {"status": "ok", "region": self.region}).encode()
        if path == "/readyz":
            runtimes = self.readiness()
            ready = all(v == "ready" for v in runtimes.values())
            body = json.dumps({"ready": ready, "region": self.region, "runtimes": runtimes})
            return ("200 OK" if ready else "503 Service Unavailable"), "application/json", \
                body.encode()
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", METRICS.render()
        return "404 Not Found", "application/json", b'{"error":"not_found"}'
