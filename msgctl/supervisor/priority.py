"""A supervised program's CPU priority (its scheduling group's nice value and its own) and
its timer slack.

When every engine and runtime of a region share a few cores, the message path
waits for a core in the single event loop of each gateway and sequencer
process, while Kafka and Cassandra spread their work over dozens of threads.
The supervisor starts each program in a session of its own, and Linux gives
each session a scheduling group (autogroup) that shares the CPU evenly with
the others whatever its thread count; a group's nice value weighs that share.
Giving those event loops a lower nice value lets them run first when a core
frees up (see docs/cluster.md, "Processes of a region").

Lowering a nice value below 0 needs root or CAP_SYS_NICE: without either, the
program runs at the default priority and `apply` says why.

Timer slack is how late the kernel may end a thread's timed wait so as to wake it
together with others (50 us by default). Cassandra's idle request threads wait in
turns of 10 us for work, each a wake-up; with more slack each turn lasts longer
and most of those wake-ups go (see docs/infra.md). A thread's slack is inherited
by the threads it starts and kept across exec, and any process may set its own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def apply(pid: int, nice: int, proc: Path = PROC) -> str | None:
    """Set `pid`'s scheduling group and main thread to `nice`; None, or what failed.

    Both, because the group's value counts where the kernel groups sessions (autogroup,
    on by default on most distributions) and the thread's where it does not. Threads the
    program starts later inherit the thread's value.
    """
    problems = []
    group = proc / str(pid) / "autogroup"
    try:
        group.write_text(f"{nice}\n")
    except FileNotFoundError:
        pass  # a kernel without autogroup, or the program already gone
    except OSError as exc:
        problems.append(f"its scheduling group: {exc.strerror or exc}")
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except ProcessLookupError:
        pass
    except OSError as exc:
        problems.append(f"its process: {exc.strerror or exc}")
    return "; ".join(problems) or None


def read(pid: int, proc: Path = PROC) -> tuple[int | None, int | None]:
    """(the scheduling group's nice value, the main thread's); None where unknown."""
    group: int | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        # "/autogroup-123 nice -5"
        group = int((proc / str(pid) / "autogroup").read_text().split()[-1])
    try:
        thread: int | None = os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        thread = None
    return group, thread


def with_timer_slack(argv: list[str], micros: int) -> list[str]:
    """`argv` run by a shell that first sets its own timer slack to `micros`, then execs it
    (same pid: every thread the program starts inherits it). Where the kernel has no
    such setting (before Linux 4.6) the program starts with the default."""
    slack = f"{{ echo {micros * 1000} > /proc/self/timerslack_ns; }} 2>/dev/null"
    return ["/bin/sh", "-c", f'{slack}; exec "$@"', argv[0], *argv]
