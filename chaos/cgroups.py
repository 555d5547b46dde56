"""Control groups that tell one region's programs from another's on a shared loopback.

Every connection to a 127.x address leaves from 127.0.0.1, so the source
address says nothing about which region sent a packet; the sending socket's
cgroup does (iptables ``-m cgroup --path`` in OUTPUT, cgroup v2). The supervisor
places each program, before it execs, in ``msgctl/<deployment>/<region>/programs``
(Toxiproxy in ``.../<region>/proxy``) under the cgroup v2 mount, and removes the
tree when the deployment stops. A socket keeps the cgroup it was created in, so
joining has to happen before the program opens any.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = "msgctl"
PROGRAMS, PROXY = "programs", "proxy"


def mount_point(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or ``.../unified``)."""
    try:
        for line in mounts.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                return Path(parts[1])
    except OSError:
        return None
    return None


def relative(deployment: str, region: str, role: str | None = None) -> str:
    """The path iptables matches (relative to the v2 root): a region, or one role in it."""
    return "/".join(p for p in (ROOT, deployment, region, role) if p)


def unavailable_reason() -> str | None:
    """Why this machine cannot place programs in cgroups, or None when it can."""
    if os.geteuid() != 0:
        return "root (cgroups and iptables rules need it)"
    mount = mount_point()
    if mount is None:
        return "a cgroup v2 mount (none in /proc/self/mounts)"
    if not os.access(mount, os.W_OK):
        return f"a writable cgroup v2 mount ({mount} is read-only)"
    return None


def create(deployment: str, regions: list[str]) -> Path:
    """Make the deployment's tree; returns its directory."""
    mount = mount_point()
    if mount is None:
        raise OSError("no cgroup v2 mount")
    base = mount / ROOT / deployment
    for region in regions:
        for role in (PROGRAMS, PROXY):
            (base / region / role).mkdir(parents=True, exist_ok=True)
    return base


def procs_file(deployment: str, region: str, role: str) -> Path | None:
    mount = mount_point()
    if mount is None:
        return None
    path = mount / relative(deployment, region, role) / "cgroup.procs"
    return path if path.exists() else None


def join_argv(procs: Path, argv: list[str]) -> list[str]:
    """`argv` run by a shell that first moves itself into the cgroup, then execs it (same
    pid), so the program never opens a socket outside its region's cgroup."""
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *argv]


def remove(deployment: str) -> None:
    """Remove the deployment's tree once its programs are gone (leaves first)."""
    mount = mount_point()
    if mount is None:
        return
    base = mount / ROOT / deployment
    if not base.is_dir():
        return
    for path in sorted((p for p in base.rglob("*") if p.is_dir()),
                       key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    for path in (base, base.parent):  # msgctl/ too, when no other deployment uses it
        with contextlib.suppress(OSError):
            path.rmdir()
