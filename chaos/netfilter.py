"""iptables rules of a deployment: the rule text is pure, applying it is one command.

Everything lives in chains the deployment owns, named ``MSGCTL-<deployment id>``
(in the filter and nat tables, each jumped to from the top of OUTPUT) and
``MSGCTL-<id>-<fault id>`` (one per network fault, jumped to from the first).
Healing deletes exactly those jumps and chains; no other rule is touched.

How a region is told apart on loopback: every program of region R runs in the
cgroup ``msgctl/<id>/R`` (see `chaos.cgroups`). The base chain marks each
connection with its initiator's region (CONNMARK, bits ``MARK_MASK``) from the
initiator's first packet on. A cut from A to B then drops, in OUTPUT, the
packets A's programs send

- on connections A opened to B's address (``--ctdir ORIGINAL --ctorigdst B``;
  the original destination, so a connection redirected through a link proxy is
  matched too), and
- on connections B's programs opened (``--ctdir REPLY`` with B's mark).

Clients (drill traffic, `msgctl status`, anyone outside the deployment's
cgroups) are in no region's cgroup: their connections are never cut. On
loopback every packet passes OUTPUT once, so this is the whole path.

The nat chain redirects the programs of region X connecting to a peer Y's engine
port to X's Toxiproxy (DNAT), which forwards it to Y: link faults are toxics
on those proxies (`chaos.toxics`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from chaos import cgroups

MARK_MASK = 0x7F000000  # connection mark bits of the initiator's region (up to 127 regions)
_WAIT = ["-w", "5"]  # wait for the xtables lock rather than fail


class NetfilterError(RuntimeError):
    """iptables refused a change; nothing of that change is in force."""


@dataclass(frozen=True)
class RegionNet:
    name: str
    host: str
    index: int  # topology order; the connection mark is index + 1

    @property
    def mark(self) -> int:
        return (self.index + 1) << 24


@dataclass(frozen=True)
class Redirect:
    """Connections from `source`'s programs to upstream go to `listen` (a proxy) instead."""

    source: str
    upstream_host: str
    upstream_port: int
    listen_host: str
    listen_port: int


def chain(deployment: str) -> str:
    return f"MSGCTL-{deployment}"


def fault_chain(deployment: str, fault_id: str) -> str:
    name = f"MSGCTL-{deployment}-{fault_id}"
    if len(name) > 28:  # iptables' limit on chain names
        raise ValueError(f"chain name too long: {name}")
    return name


def _cg(deployment: str, region: str, role: str | None = None) -> str:
    return cgroups.relative(deployment, region, role)


def base_rules(deployment: str, regions: Iterable[RegionNet],
               redirects: Iterable[Redirect] = ()) -> str:
    """iptables-restore input (``--noflush``) that installs the deployment's chains."""
    c = chain(deployment)
    lines = ["*filter", f":{c} - [0:0]", f"-I OUTPUT 1 -j {c}"]
    for r in regions:
        lines.append(f"-A {c} -m cgroup --path {_cg(deployment, r.name)} -m conntrack "
                     f"--ctdir ORIGINAL -j CONNMARK --set-xmark {r.mark:#x}/{MARK_MASK:#x}")
    lines.append("COMMIT")
    redirects = list(redirects)
    if redirects:
        lines += ["*nat", f":{c} - [0:0]", f"-I OUTPUT 1 -j {c}"]
        for d in redirects:
            lines.append(
                f"-A {c} -m cgroup --path {_cg(deployment, d.source, cgroups.PROGRAMS)} "
                f"-p tcp -d {d.upstream_host}/32 --dport {d.upstream_port} "
                f"-j DNAT --to-destination {d.listen_host}:{d.listen_port}")
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def cut_rules(deployment: str, fault_id: str,
              cuts: Iterable[tuple[RegionNet, RegionNet]]) -> str:
    """A fault's chain: for every (A, B) in `cuts`, what A's programs send to B is dropped."""
    c, fc = chain(deployment), fault_chain(deployment, fault_id)
    lines = ["*filter", f":{fc} - [0:0]"]
    for a, b in cuts:
        if a.host == b.host:
            raise ValueError(f"{a.name} and {b.name} share {a.host}; a cut needs each region "
                             "on an address of its own")
        cg = _cg(deployment, a.name)
        lines.append(f"-A {fc} -m cgroup --path {cg} -m conntrack --ctdir ORIGINAL "
                     f"--ctorigdst {b.host}/32 -j DROP")
        lines.append(f"-A {fc} -m cgroup --path {cg} -m conntrack --ctdir REPLY "
                     f"-m connmark --mark {b.mark:#x}/{MARK_MASK:#x} -j DROP")
    lines += [f"-A {c} -j {fc}", "COMMIT"]
    return "\n".join(lines) + "\n"


# -- the machine ------------------------------------------------------------------

def unavailable_reason() -> str | None:
    """What is missing for network faults here, or None."""
    missing = [b for b in ("iptables", "iptables-restore", "iptables-save")
               if shutil.which(b) is None]
    if missing:
        return "iptables (apt-get install iptables)"
    return cgroups.unavailable_reason()


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


def restore(text: str) -> None:
    """Apply iptables-restore input atomically, leaving other rules alone."""
    proc = _run(["iptables-restore", "--noflush", *_WAIT], text)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit {proc.returncode}"
        raise NetfilterError(f"iptables-restore failed: {detail}")


def _rules(table: str) -> list[str]:
    proc = _run(["iptables", *_WAIT, "-t", table, "-S"])
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def _owned(deployment: str, name: str) -> bool:
    c = chain(deployment)
    return name == c or name.startswith(c + "-")


def remove_fault(deployment: str, fault_id: str) -> None:
    """Take one fault's chain out; a chain that is already gone is fine."""
    c, fc = chain(deployment), fault_chain(deployment, fault_id)
    rules = _rules("filter")
    if f"-A {c} -j {fc}" in rules:
        _run(["iptables", *_WAIT, "-t", "filter", "-D", c, "-j", fc])
    if f"-N {fc}" in rules:
        _run(["iptables", *_WAIT, "-t", "filter", "-F", fc])
        _run(["iptables", *_WAIT, "-t", "filter", "-X", fc])


def remove_all(deployment: str) -> list[str]:
    """Every chain of the deployment and every jump to one, in both tables; the names gone."""
    gone: list[str] = []
    for table in ("filter", "nat"):
        rules = _rules(table)
        # jumps first (from OUTPUT and between our own chains), then the chains
        for rule in rules:
            m = re.match(r"^-A (\S+) -j (\S+)$", rule)
            if m and _owned(deployment, m.group(2)):
                _run(["iptables", *_WAIT, "-t", table, "-D", m.group(1), "-j", m.group(2)])
        names = [r.split()[1] for r in rules if r.startswith("-N ")
                 and _owned(deployment, r.split()[1])]
        for name in names:
            _run(["iptables", *_WAIT, "-t", table, "-F", name])
        for name in sorted(names, key=len, reverse=True):
            _run(["iptables", *_WAIT, "-t", table, "-X", name])
            gone.append(f"{table}/{name}")
    return gone


def installed(deployment: str) -> bool:
    return f"-N {chain(deployment)}" in _rules("filter")


def snapshot() -> str:
    """The whole ruleset as iptables-save prints it, minus counters, timestamps and tables
    that hold nothing (an empty table shows up once anything has listed it)."""
    proc = _run(["iptables-save"])
    out: list[str] = []
    table: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("#"):
            continue
        line = re.sub(r" \[\d+:\d+\]$", "", line)
        table.append(line)
        if line == "COMMIT":
            empty = all(x.startswith(("*", ":")) and (x.startswith("*") or x.endswith(" ACCEPT"))
                        for x in table[:-1])
            builtin_only = all(not x.startswith(":") or x.split()[0][1:] in _BUILTIN
                               for x in table[:-1])
            if not (empty and builtin_only):
                out.extend(table)
            table = []
    return "\n".join(out)


_BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}
