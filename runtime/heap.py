"""Give the C heap's free pages back to the OS, in every runtime process.

Each TLS connection reads through a 256 KiB buffer that uvloop takes from
malloc and frees when the connection closes. glibc keeps freed chunks that lie
between live ones, and returns to the OS only a free end of its heap: after
400 benchmark clients came and went, a gateway's heap held 120 MiB free against
24 MiB in use, and its RSS kept the pages those clients had touched.
`malloc_trim(0)` hands every free page back, so a runtime's RSS follows what it
holds rather than the most it ever held. Over six load steps of those clients,
with closed connections freed at once (runtime/gateway/connection.py), the
gateway ended at 140 MiB with the trims against 181 MiB without.

A trim of a heap with nothing to give back takes well under a millisecond; one
that gives back 100 MiB about 10 ms. It runs on the event loop (in a thread it
would still hold the heap's lock that the loop's own mallocs wait for).
Where the C library is not glibc there is nothing to trim and nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import resource

from runtime.metrics import METRICS

TRIM_EVERY_S = 30.0
# a heap with less free than this is left alone (each runtime's starts with a few MiB)
FREE_TO_TRIM = 8 * 1024 * 1024

_PAGE = resource.getpagesize()


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33 and later): every field a size_t
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def rss_bytes() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class Heap:
    """glibc's malloc heap of this process: how much of it is free, and trimming it."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._trim = libc.malloc_trim
        self._trim.argtypes = [ctypes.c_size_t]
        self._trim.restype = ctypes.c_int
        self._info = libc.mallinfo2
        self._info.argtypes = []
        self._info.restype = _MallInfo2

    def free_bytes(self) -> int:
        """Bytes in free chunks of every malloc arena (resident or already given back)."""
        return int(self._info().fordblks)

    def trim(self) -> int:
        """Give the heap's free pages back to the OS; the bytes RSS fell by (0 if none)."""
        before = rss_bytes()
        self._trim(0)
        return max(0, before - rss_bytes())


def glibc_heap() -> Heap | None:
    """The process's glibc heap; None under another C library (musl) or an old glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return Heap(libc) if hasattr(libc, "malloc_trim") and hasattr(libc, "mallinfo2") else None
    except OSError:
        return None


async def keep_trimmed(heap: Heap, every_s: float = TRIM_EVERY_S,
                       free_to_trim: int = FREE_TO_TRIM) -> None:
    """Trim `heap` every `every_s` while it has at least `free_to_trim` bytes free; runs
    until cancelled. The bytes given back count in `msgctl_heap_released_bytes_total`."""
    while True:
        await asyncio.sleep(every_s)
        if heap.free_bytes() < free_to_trim:
            continue
        released = heap.trim()
        METRICS.heap_trims.inc()
        METRICS.heap_released.inc(released)


def start() -> asyncio.Task[None] | None:
    """`keep_trimmed` as a task of the running loop, when the heap is glibc's."""
    heap = glibc_heap()
    if heap is None:
        return None
    return asyncio.get_running_loop().create_task(keep_trimmed(heap), name="heap-trim")
