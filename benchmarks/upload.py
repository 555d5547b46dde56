"""Upload (and download) throughput of a 10 MB file through the presigned URL (embedded).

    python benchmarks/upload.py [--mb 10] [--runs 5] [--url ws://HOST:PORT/v1/ws --home DIR]

Starts the embedded default in a temporary home (or uses a running deployment
given by --url and --home), asks for an upload slot over the WebSocket, POSTs
the file to the presigned URL with aiohttp (multipart/form-data, like a
browser or an S3 client), then GETs the signed download URL. Prints JSON:
MB/s (10^6 bytes per second) per run and the median, for upload and download.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from msgctl.home import Home  # noqa: E402
from runtime import auth  # noqa: E402
from tests.conftest import start_deployment  # noqa: E402
from tests.wsclient import Client  # noqa: E402


async def measure(url: str, token: str, size: int, runs: int) -> dict[str, Any]:
    data = os.urandom(size)
    client = await Client.open(url, token)
    up_rates: list[float] = []
    down_rates: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(runs):
            slot = await client.request({"t": "upload", "kind": "video",
                                         "content_type": "video/mp4", "size": size})
            assert slot["t"] == "upload_url", slot
            form = aiohttp.FormData()
            for k, v in slot["upload"]["fields"].items():
                form.add_field(k, v)
            form.add_field("file", data, filename="bench.mp4", content_type="video/mp4")
            t0 = time.perf_counter()
            async with http.post(slot["upload"]["url"], data=form) as resp:
                assert resp.status == 204, await resp.text()
            up_rates.append(size / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            got = 0
            async with http.get(slot["media"]["url"]) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_chunked(1 << 20):
                    got += len(chunk)
            assert got == size
            down_rates.append(size / (time.perf_counter() - t0) / 1e6)
    await client.close()
    return {"file_bytes": size, "runs": runs,
            "upload_mb_s": [round(r, 1) for r in up_rates],
            "upload_mb_s_median": round(statistics.median(up_rates), 1),
            "download_mb_s": [round(r, 1) for r in down_rates],
            "download_mb_s_median": round(statistics.median(down_rates), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0, help="file size in MB (10^6 bytes)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="a running gateway's ws:// URL (with --home)")
    parser.add_argument("--home", type=Path, help="that deployment's home (for a token)")
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    if args.url:
        if not args.home:
            parser.error("--url needs --home")
        token = auth.issue(Home(args.home).secret(), "bench-upload", "bench", 3600)
        result = asyncio.run(measure(args.url, token, size, args.runs))
    else:
        with tempfile.TemporaryDirectory(prefix="msgctl-upload-") as tmp:
            dep = start_deployment(Path(tmp))
            try:
                result = asyncio.run(measure(dep.ws_url, dep.token("bench-upload", "bench"),
                                             size, args.runs))
            finally:
                dep.down()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
