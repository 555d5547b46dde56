"""The runtimes' heap trimming: free pages between live chunks go back to the OS."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from runtime import heap
from runtime.metrics import METRICS

# A fresh interpreter's heap, shaped as a gateway's after its clients left: 400 reads'
# worth of 256 KiB buffers (uvloop's TLS read buffer) freed between small live objects.
FRAGMENTED = textwrap.dedent("""
    import json
    from runtime import heap
    h = heap.glibc_heap()
    spare = bytearray(300 * 1024)
    del spare  # glibc now serves 256 KiB from its heap instead of mmap, as in a runtime
    buffers, live = [], []
    for _ in range(400):
        buffers.append(bytearray(256 * 1024))  # zero-filled: every page resident
        live.append(bytearray(600))  # keeps each freed buffer between live chunks
    del buffers
    free, before = h.free_bytes(), heap.rss_bytes()
    released = h.trim()
    print(json.dumps({"free": free, "before": before, "released": released,
                      "after": heap.rss_bytes()}))
""")


def test_a_trim_gives_back_the_free_pages_between_live_chunks() -> None:
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True,
                         check=True, timeout=60, cwd=Path(__file__).parents[2])
    got = json.loads(out.stdout)
    mib = 1024 * 1024
    assert got["free"] >= 90 * mib  # freed, but glibc kept it
    assert got["released"] >= 80 * mib
    assert got["after"] <= got["before"] - 80 * mib


class _Heap(heap.Heap):
    """A heap whose free bytes the test sets, recording its trims."""

    def __init__(self, free: int, gives_back: int) -> None:
        self.free, self.gives_back, self.trims = free, gives_back, 0

    def free_bytes(self) -> int:
        return self.free

    def trim(self) -> int:
        self.trims += 1
        return self.gives_back


async def _run_for(h: heap.Heap, seconds: float, free_to_trim: int) -> None:
    task = asyncio.create_task(heap.keep_trimmed(h, every_s=0.01, free_to_trim=free_to_trim))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_only_a_heap_with_enough_free_is_trimmed_and_what_it_gave_back_is_counted(
) -> None:
    small = _Heap(free=1024, gives_back=0)
    await _run_for(small, 0.1, free_to_trim=4096)
    assert small.trims == 0

    trims, released = METRICS.heap_trims._value.get(), METRICS.heap_released._value.get()
    big = _Heap(free=8192, gives_back=3 * 4096)
    await _run_for(big, 0.1, free_to_trim=4096)
    assert big.trims >= 3
    assert METRICS.heap_trims._value.get() - trims == big.trims
    assert METRICS.heap_released._value.get() - released == big.trims * 3 * 4096


async def test_the_task_runs_only_where_the_heap_is_glibcs() -> None:
    task = heap.start()
    assert (task is None) == (heap.glibc_heap() is None)
    if task is not None:
        assert task.get_name() == "heap-trim" and not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
