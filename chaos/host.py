"""Faults on one host, owned by the deployment's supervisor.

The supervisor creates a `ChaosHost` from the ``chaos`` section of ``plan.json``.
On start it places the programs in their regions' cgroups and installs the
deployment's base chains (connection marks, link-proxy redirects); `apply`
turns a checked `FaultSpec` into rules, toxics or signals, records it in the
ledger and arms its timer; `heal` undoes one fault or all; on shutdown every
fault is healed and the base chains and cgroups are removed. `heal_offline` does
the undoing from the ledger alone, for when the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chaos import cgroups, netfilter, select, toxics
from chaos.faults import (
    INSTANT,
    KILL,
    LINK,
    NETWORK,
    PAUSE,
    STOP,
    FaultError,
    FaultSpec,
    check,
    cuts,
    describe,
)
from chaos.ledger import Entry, Ledger
from chaos.netfilter import Redirect, RegionNet

log = logging.getLogger("msgctl.chaos")


def deployment_id(home_root: Path) -> str:
    """A short, stable name for a deployment home (chains, cgroups)."""
    return hashlib.sha1(str(home_root.resolve()).encode()).hexdigest()[:8]


@dataclass
class ChaosPlan:
    """The ``chaos`` section of plan.json, written by `msgctl up`."""

    deployment: str
    regions: list[RegionNet]
    network: bool = False  # cgroups + base chains wanted (root, iptables, cgroup v2)
    network_reason: str = ""  # why not, when not
    multi_region_cluster: bool = False
    proxies: dict[str, dict[str, Any]] = field(default_factory=dict)  # region -> api, proxies
    proxy_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment,
                "regions": [{"name": r.name, "host": r.host, "index": r.index}
                            for r in self.regions],
                "network": self.network, "network_reason": self.network_reason,
                "multi_region_cluster": self.multi_region_cluster, "proxies": self.proxies,
                "proxy_reason": self.proxy_reason}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ChaosPlan:
        return cls(str(raw["deployment"]),
                   [RegionNet(r["name"], r["host"], int(r["index"])) for r in raw["regions"]],
                   bool(raw.get("network")), str(raw.get("network_reason", "")),
                   bool(raw.get("multi_region_cluster")), dict(raw.get("proxies") or {}),
                   str(raw.get("proxy_reason", "")))

    def redirects(self) -> list[Redirect]:
        return [Redirect(region, p["upstream_host"], p["upstream_port"], p["listen_host"],
                         p["listen_port"])
                for region, entry in self.proxies.items() for p in entry["proxies"]]


class Programs(Protocol):
    """What the host needs of the supervisor for process faults."""

    def match(self, pattern: str) -> list[str]: ...
    def live_pid(self, name: str) -> int | None: ...
    async def stop_program(self, name: str) -> None: ...
    async def start_program(self, name: str) -> None: ...


class ChaosHost:
    def __init__(self, run_dir: Path, plan: ChaosPlan, programs: Programs) -> None:
        self.plan = plan
        self.programs = programs
        self.ledger = Ledger.load(run_dir)
        self.cgroups_ready = False
        self.network_reason = ""
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    # -- life of the deployment ----------------------------------------------------
    def setup(self) -> None:
        """Undo what a previous supervisor left, then cgroups and base chains."""
        heal_offline(self.ledger, self.plan, remove_base=self.plan.network)
        if not self.plan.network:
            self.network_reason = f"needs {self.plan.network_reason or 'chaos support at up'}"
            return
        reason = netfilter.unavailable_reason()
        if reason:
            self.network_reason = f"needs {reason}"
            return
        try:
            cgroups.create(self.plan.deployment, [r.name for r in self.plan.regions])
            self.cgroups_ready = True
            netfilter.restore(netfilter.base_rules(self.plan.deployment, self.plan.regions,
                                                   self.plan.redirects()))
        except (OSError, netfilter.NetfilterError) as exc:
            self.network_reason = f"could not be set up: {exc}"
            log.warning("chaos: %s", self.network_reason)
            return
        self.network_reason = ""

    def wrap(self, region: str, role: str, argv: list[str]) -> list[str]:
        """A program's argv, joining its region's cgroup first when there are cgroups."""
        if not self.cgroups_ready:
            return argv
        procs = cgroups.procs_file(self.plan.deployment, region, role)
        return cgroups.join_argv(procs, argv) if procs else argv

    async def close(self) -> None:
        """Heal every fault (before the programs are stopped: paused ones resume)."""
        async with self._lock:
            for entry in list(self.ledger.faults):
                await self._heal(entry, "deployment stopped")
            self.ledger.save()
        for task in list(self._background):
            task.cancel()

    def teardown(self) -> None:
        """After the programs stopped: base chains and cgroups go."""
        if self.plan.network:
            with contextlib.suppress(OSError, netfilter.NetfilterError):
                netfilter.remove_all(self.plan.deployment)
        if self.cgroups_ready:
            cgroups.remove(self.plan.deployment)

    def view(self) -> dict[str, Any]:
        proxies = "on" if self.plan.proxies and not self.network_reason else (
            f"off ({self.plan.proxy_reason or self.network_reason})")
        return {"network": "on" if not self.network_reason else f"off ({self.network_reason})",
                "link_proxy": proxies, "in_force": len(self.ledger.faults)}

    # -- faults --------------------------------------------------------------------
    def in_force(self) -> list[dict[str, Any]]:
        return [e.public() for e in self.ledger.faults]

    async def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        spec = FaultSpec.from_dict(raw)
        check(spec, self.plan.regions, multi_region_cluster=self.plan.multi_region_cluster)
        async with self._lock:
            fid = self.ledger.new_id()
            now = time.time()
            entry = Entry(fid, spec.kind, describe(spec), list(spec.targets), spec.to_dict(),
                          now, now + spec.duration if spec.duration else None)
            if spec.kind in NETWORK:
                await self._apply_network(entry, spec)
            else:
                await self._apply_process(entry, spec)
            if spec.kind in INSTANT:
                self.ledger.retire(entry, now, "done")
            else:
                self.ledger.faults.append(entry)
                self._arm(entry)
            self.ledger.save()
        return entry.public()

    async def _apply_network(self, entry: Entry, spec: FaultSpec) -> None:
        if self.network_reason:
            raise FaultError(f"{spec.kind} {self.network_reason}", 1)
        if spec.kind == LINK:
            if not self.plan.proxies:
                raise FaultError("the links of this deployment do not go through the link proxy"
                                 f" ({self.plan.proxy_reason or 'chaos.link_proxy is off'})", 1)
            await asyncio.to_thread(self._add_toxics, entry, spec)
            return
        text = netfilter.cut_rules(self.plan.deployment, entry.id, cuts(spec, self.plan.regions))
        try:
            await asyncio.to_thread(netfilter.restore, text)
        except netfilter.NetfilterError as exc:
            raise FaultError(str(exc), 1) from None
        entry.undo = {"chain": netfilter.fault_chain(self.plan.deployment, entry.id)}

    def _add_toxics(self, entry: Entry, spec: FaultSpec) -> None:
        a, b = spec.targets
        wanted = toxics.toxics(entry.id, **{k: v for k, v in spec.options.items() if v})
        added: list[list[str]] = []
        try:
            for src, dst in ((a, b), (b, a)):
                api = self.plan.proxies[src]["api"]
                for proxy in self.plan.proxies[src]["proxies"]:
                    if proxy["target"] != dst:
                        continue
                    for toxic in wanted:
                        toxics.add(api, proxy["name"], toxic)
                        added.append([api, proxy["name"], toxic.name])
        except toxics.ToxiproxyError as exc:
            for api, proxy_name, name in added:  # nothing half-applied
                with contextlib.suppress(toxics.ToxiproxyError):
                    toxics.remove(api, proxy_name, name)
            raise FaultError(f"the link proxy refused: {exc}", 1) from None
        entry.undo = {"toxics": added}

    async def _apply_process(self, entry: Entry, spec: FaultSpec) -> None:
        pattern = spec.targets[0]
        # never the control plane: a fault on an agent would cut the operator off from
        # the very call that applies it (and from `chaos heal`)
        names = [n for n in self.programs.match(pattern) if not n.startswith("agent.")]
        if not names:
            raise FaultError(f"no program or runtime matches '{pattern}'")
        live = [n for n in names if self.programs.live_pid(n)]
        if not live:
            raise FaultError(f"nothing matching '{pattern}' is running now", 1)
        chosen = select.pick(live, spec.options.get("select", "all"), spec.options.get("seed"))
        if not chosen:
            raise FaultError(f"the selector '{spec.options.get('select')}' picks none of "
                             f"{len(live)} running target(s)")
        entry.targets = chosen
        if spec.kind == KILL:
            for name in chosen:
                pid = self.programs.live_pid(name)
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, spec.options["signal"])
            entry.description = f"{describe(spec)} -> {', '.join(chosen)}"
        elif spec.kind == PAUSE:
            paused: dict[str, int] = {}
            for name in chosen:
                pid = self.programs.live_pid(name)
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGSTOP)
                        paused[name] = pid
            entry.undo = {"paused": paused}
            entry.description = f"pause {', '.join(chosen)}"
        elif spec.kind == STOP:
            for name in chosen:
                await self.programs.stop_program(name)
            entry.undo = {"stopped": chosen}
            entry.description = f"stop {', '.join(chosen)}"

    def _arm(self, entry: Entry) -> None:
        if entry.expires is None:
            return

        async def expire() -> None:
            await asyncio.sleep(max(0.0, entry.expires - time.time()))  # type: ignore[operator]
            async with self._lock:
                if entry in self.ledger.faults:
                    await self._heal(entry, "expired")
                    self.ledger.save()

        self._timers[entry.id] = asyncio.create_task(expire(), name=f"chaos-{entry.id}")

    async def heal(self, fault_id: str | None = None) -> list[dict[str, Any]]:
        async with self._lock:
            if fault_id is None:
                targets = list(self.ledger.faults)
            else:
                entry = self.ledger.find(fault_id)
                if entry is None:
                    raise FaultError(f"no fault {fault_id} is in force (see 'msgctl chaos status')")
                targets = [entry]
            for entry in targets:
                await self._heal(entry, "healed")
            self.ledger.save()
        return [e.public() for e in targets]

    async def _heal(self, entry: Entry, note: str) -> None:
        timer = self._timers.pop(entry.id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        await asyncio.to_thread(undo, entry, self.plan)
        for name in entry.undo.get("stopped", []):
            task = asyncio.create_task(self.programs.start_program(name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.ledger.retire(entry, time.time(), note)


def undo(entry: Entry, plan: ChaosPlan) -> None:
    """Undo one fault as its ledger entry says (rules, toxics, paused groups)."""
    if entry.undo.get("chain"):
        netfilter.remove_fault(plan.deployment, entry.id)
    for api, proxy, name in entry.undo.get("toxics", []):
        with contextlib.suppress(toxics.ToxiproxyError):
            toxics.remove(api, proxy, name)
    for pid in entry.undo.get("paused", {}).values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGCONT)


def heal_offline(ledger: Ledger, plan: ChaosPlan | None, *, remove_base: bool) -> list[Entry]:
    """Undo every recorded fault without a supervisor (programs it stopped stay stopped:
    there is no one to start them); with `remove_base`, the base chains go too."""
    healed = list(ledger.faults)
    for entry in healed:
        if plan is not None:
            undo(entry, plan)
        ledger.retire(entry, time.time(), "healed without the supervisor")
    if plan is not None and remove_base and netfilter.unavailable_reason() is None:
        netfilter.remove_all(plan.deployment)
    if healed:
        ledger.save()
    return healed
