"""Running a drill: steady state, traffic, the fault schedule, heal, converge, check.

The phases, each recorded in the history:
``steady`` (probes must pass before any fault) -> ``traffic`` (clients connect,
create the conversations, send at the drill's rate; faults are applied at their
times through the supervisor and healed when their duration ends) -> ``heal``
(rollbacks: every fault still in force is healed, always, also on errors and
Ctrl-C) -> ``converge`` (until, within the bound, no send is pending, every region
serves the same history holding every acknowledged message, and every
connected device has everything) -> ``final-read`` (the last read of every
conversation from every region) -> ``steady-after``. Then the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import string
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos import check as checker
from chaos import probes
from chaos.drill import Drill, ScheduledFault
from chaos.faults import FaultError, FaultSpec
from chaos.history import History
from chaos.target import Target, gather_limited, read_conversation
from chaos.traffic import Device
from msgctl import failover
from msgctl.errors import MsgctlError
from msgctl.infra import replication
from msgctl.supervisor import client

LAG_EVERY = 2.0
CONVERGE_POLL = 1.0


class DrillAborted(RuntimeError):
    """The drill could not run to its end (steady state not met, a fault refused)."""


@dataclass
class Conv:
    id: str
    home: str
    members: list[Device]


@dataclass
class Progress:
    """What the live view shows; the runner keeps it current."""

    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)
    faults: dict[str, str] = field(default_factory=dict)  # id -> label, in force
    acks: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pending: int = 0
    deliveries: int = 0
    lag: dict[str, int | None] = field(default_factory=dict)
    note: str = ""

    def ack_rate(self, region: str, window: float = 5.0) -> float:
        now = time.monotonic()
        times = self.acks.get(region, [])
        while times and now - times[0] > window:
            times.pop(0)
        return len(times) / window


class Runner:
    def __init__(self, drill: Drill, target: Target, out: Path, seed: int,
                 on_change: Callable[[Progress], None] | None = None) -> None:
        self.drill = drill
        self.target = target
        self.out = out
        self.seed = seed
        self.rng = random.Random(seed)
        self.history = History(out / "history.jsonl")
        self.progress = Progress()
        self.on_change = on_change or (lambda p: None)
        self.devices: list[Device] = []
        self.convs: list[Conv] = []
        self.applied: list[dict[str, Any]] = []
        self.tag = f"{drill.name[:12]}-{secrets.token_hex(3)}"
        self._open_faults: dict[str, str] = {}  # supervisor fault id -> nemesis id
        self._homes_moved = False  # a failover or failback ran: converge waits for reconcile
        self._reconciled_at: float | None = None
        # failovers/failbacks due while traffic runs: the end of traffic waits for each
        self._moving = sum(1 for f in drill.faults if f.kind in ("failover", "failback")
                           and f.at < drill.traffic.duration)
        self._cids = 0
        self._stop_sending = asyncio.Event()
        self._watchers: set[asyncio.Task[None]] = set()

    # -- phases -----------------------------------------------------------------------
    def phase(self, name: str, **extra: Any) -> None:
        self.progress.phase = name
        self.history.add("phase", name=name, **extra)
        self.on_change(self.progress)

    async def run(self) -> dict[str, Any]:
        probes_out: dict[str, Any] = {}
        tasks: list[asyncio.Task[Any]] = []
        result: dict[str, Any] = {}
        try:
            self.phase("steady")
            before = await probes.until_steady(self.target, self.drill.steady_state, 60)
            probes_out["before"] = before
            if not before["ok"]:
                failed = next(c for c in before["checks"] if not c["ok"])
                raise DrillAborted(f"steady state not met before the faults: {failed['name']}: "
                                   f"{failed['detail']}")
            self.phase("setup")
            await self._setup_traffic()
            self.phase("traffic")
            tasks.append(asyncio.create_task(self._send_loop()))
            tasks.append(asyncio.create_task(self._watch_acks()))
            if self.target.backend == "cluster" and len(self.target.regions) > 1:
                tasks.append(asyncio.create_task(self._sample_lag()))
            faults = asyncio.create_task(self._nemesis())
            ends = time.monotonic() + self.drill.traffic.duration
            await asyncio.wait({faults}, timeout=self.drill.traffic.duration)
            if faults.done() and not faults.cancelled() and faults.exception() is not None:
                raise faults.exception()  # type: ignore[misc]
            await asyncio.sleep(max(0.0, ends - time.monotonic()))
            self._stop_sending.set()
            for d in self.devices:
                d.accepting = False
            await self._finish_nemesis(faults)
            self.phase("heal")
            await self._heal_all()
            self.phase("converge")
            converged_in = await self._converge()
            self.phase("converged" if converged_in is not None else "not-converged",
                       seconds=converged_in)
            self.phase(checker.FINAL_READ)
            await self._final_read()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.phase("steady-after")
            probes_out["after"] = await probes.until_steady(self.target,
                                                            self.drill.steady_state, 90)
        finally:
            for task in tasks:
                task.cancel()
            for task in list(self._watchers):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._heal_all(wait=False)  # rollbacks: always
            await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)
            self.history.flush()
        checked = checker.check(self.history.records)
        after_ok = bool(probes_out.get("after", {}).get("ok"))
        result = {
            "drill": self.drill.name, "topology": self.target.name, "seed": self.seed,
            "valid": checked.valid, "steady_state_after": after_ok,
            "ok": checked.valid and after_ok, **checked.to_dict(),
            "faults": self.applied, "journal": str(self.out),
            **({"failover": self._failover_figures()} if self._homes_moved else {}),
            "traffic": {"devices": len(self.devices), "conversations": len(self.convs),
                        "skipped": sum(d.skipped for d in self.devices)},
        }
        self.history.close()
        return {"result": result, "probes": probes_out}

    # -- traffic ----------------------------------------------------------------------
    async def _setup_traffic(self) -> None:
        t = self.drill.traffic
        regions = self.target.names
        by_region: dict[str, list[Device]] = {}
        for region in regions:
            by_region[region] = []
            for i in range(t.clients):
                user = f"{self.tag}-{region}-{i}"
                device = Device(user, "phone", region, self.target.urls_for(region, i),
                                self.target.token(user, "phone"), self.history,
                                send_timeout=t.send_timeout)
                by_region[region].append(device)
                self.devices.append(device)
        for d in self.devices:
            d.start()
        await asyncio.wait_for(asyncio.gather(*(d.hello.wait() for d in self.devices)), 60)
        n = 0
        for spec in t.conversations:
            homes = regions if spec.home == "each" else [spec.home]
            for home in homes:
                for k in range(spec.count):
                    members = self._members(by_region, regions, home, spec.size, spec.across,
                                            k)
                    n += 1
                    self.convs.append(await self._create(f"{self.tag}-c{n}", home, members))

    def _members(self, by_region: dict[str, list[Device]], regions: list[str], home: str,
                 size: int, across: bool, k: int) -> list[Device]:
        """`size` devices: the creator in the home region, the others spread over the
        regions after it (or all in the home region when not `across`)."""
        start = regions.index(home)
        chosen: list[Device] = []
        j = 0
        while len(chosen) < size and j < size * len(regions) * 4:
            region = regions[(start + j) % len(regions)] if across else home
            pool = by_region[region]
            device = pool[(k + j // (len(regions) if across else 1)) % len(pool)]
            if device not in chosen:
                chosen.append(device)
            j += 1
        if len(chosen) < size:
            raise DrillAborted(f"not enough clients for a conversation of {size}: raise "
                               "traffic.clients")
        return chosen

    async def _create(self, conv_id: str, home: str, members: list[Device]) -> Conv:
        creator = members[0]
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await creator.request(
                    {"t": "create", "conv": conv_id,
                     "members": [m.user for m in members[1:]]}, 15)
            except (TimeoutError, ConnectionError) as exc:
                reply = {"t": "error", "code": "timeout", "message": str(exc)}
            if reply.get("t") == "created":
                break
            if time.monotonic() > deadline:
                raise DrillAborted(f"cannot create conversation {conv_id}: {reply}")
            await asyncio.sleep(1)
        home = str(reply.get("home", home))
        self.history.add("conv", conv=conv_id, home=home, members=[m.user for m in members])
        return Conv(conv_id, home, members)

    async def _send_loop(self) -> None:
        t = self.drill.traffic
        pairs = [(c, m) for c in self.convs for m in c.members]
        interval = 1.0 / t.rate
        next_at = time.monotonic()
        alphabet = string.ascii_letters + string.digits + " "
        while not self._stop_sending.is_set():
            conv, member = pairs[self.rng.randrange(len(pairs))]
            self._cids += 1
            size = self.rng.randint(*t.body_bytes)
            body = "".join(self.rng.choice(alphabet) for _ in range(size))
            member.enqueue(conv.id, f"m{self._cids}", body)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1:  # fell behind (a loaded machine): do not burst to catch up
                next_at = time.monotonic()

    async def _watch_acks(self) -> None:
        seen = 0
        while True:
            await asyncio.sleep(0.25)
            records = self.history.records
            now = time.monotonic()
            for r in records[seen:]:
                if r["kind"] == "send" and r["type"] == "ok":
                    self.progress.acks[r["region"]].append(now)
                elif r["kind"] == "deliver":
                    self.progress.deliveries += 1
            seen = len(records)
            self.progress.pending = sum(d.pending() for d in self.devices)
            self.on_change(self.progress)

    async def _sample_lag(self) -> None:
        # its Kafka clients are kept across samples: a client made anew for each would
        # load the brokers under test with TLS handshakes
        reader = replication.LagReader(self.target.deployment_regions())
        try:
            while True:
                try:
                    links = await asyncio.to_thread(reader.links)
                except Exception:  # a probe failing during a fault is expected
                    links = []
                for x in links:
                    self.history.add("lag", source=x.source, target=x.target,
                                     lag_ms=x.lag_ms, stalled=x.stalled)
                    self.progress.lag[f"{x.source}->{x.target}"] = x.lag_ms
                await asyncio.sleep(LAG_EVERY)
        finally:
            # a cancelled sample may still be reading in its thread: close after it
            await asyncio.to_thread(reader.close)

    # -- faults -------------------------------------------------------------------------
    async def _nemesis(self) -> None:
        t0 = time.monotonic()
        timers: list[asyncio.Task[None]] = []
        for i, fault in enumerate(sorted(self.drill.faults, key=lambda f: f.at)):
            await asyncio.sleep(max(0.0, fault.at - (time.monotonic() - t0)))
            nid = f"n{i + 1}"
            try:
                fid = await self._apply(nid, fault, i)
            except (MsgctlError, FaultError) as exc:
                raise DrillAborted(f"fault {fault.label()} was refused: {exc}") from None
            if fid is not None and fault.duration:
                timers.append(asyncio.create_task(self._heal_later(fid, fault.duration)))
        await asyncio.gather(*timers)

    async def _finish_nemesis(self, task: asyncio.Task[None]) -> None:
        # a failback waiting for reconciliation when traffic ends still runs: cancelling it
        # half-way would leave the drill's homes wherever the timeline happened to be
        deadline = time.monotonic() + self.drill.converge_timeout
        while self._moving and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if task.done():
            task.result()  # re-raise an abort
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _apply(self, nid: str, fault: ScheduledFault, index: int) -> str | None:
        """Apply one scheduled fault; the supervisor's fault id when it stays in force."""
        label = fault.label()
        args = fault.args
        record = {"id": nid, "fault": label, "at": round(self.history.now(), 2)}
        if fault.kind == "drop_clients":
            region = args.get("region", "all")
            dropped = [d for d in self.devices if region in ("all", d.region)]
            self.history.add("nemesis", type="start", id=nid, fault=label)
            await asyncio.gather(*(d.drop() for d in dropped))
            self.applied.append({**record, "description": f"dropped {len(dropped)} clients"})
            # the fault lasts until every dropped device has a session again
            self._later(self._stop_when(nid, label, lambda: all(
                d.connected.is_set() for d in dropped), 0.5))
            return None
        if fault.kind in ("failover", "failback"):
            return await self._move_homes(nid, fault, record)
        if fault.kind == "restart":
            self.history.add("nemesis", type="start", id=nid, fault=label)
            self.progress.faults[nid] = label
            reply = await asyncio.to_thread(client.command, self.target.home, "restart",
                                            240.0, glob=args["glob"])
            self.history.add("nemesis", type="stop", id=nid, fault=label)
            self.progress.faults.pop(nid, None)
            self.applied.append({**record, "description": f"restart {args['glob']}",
                                 "targets": reply.get("restarted", [])})
            return None
        spec = self._spec(fault, index)
        reply = await asyncio.to_thread(client.command, self.target.home, "chaos_apply", 30.0,
                                        fault=spec.to_dict())
        entry = reply["fault"]
        self.history.add("nemesis", type="start", id=nid, fault=entry["description"],
                         fault_id=entry["id"])
        self.applied.append({**record, "fault_id": entry["id"],
                             "description": entry["description"],
                             "targets": entry["targets"]})
        if entry.get("expires") is None:  # a kill: it lasts until the targets run again
            killed = list(entry["targets"])
            pids = {p["name"]: p.get("pid") for p in self.target.programs()}
            self._later(self._stop_when(nid, entry["description"], lambda: self._running_again(
                killed, pids), 0.5))
            return None
        self._open_faults[entry["id"]] = nid
        self.progress.faults[nid] = entry["description"]
        self.on_change(self.progress)
        return str(entry["id"])

    def _failover_figures(self) -> dict[str, float | None]:
        """RTO: from the failover command to the first send acknowledged in a later epoch;
        reconcile: from the end of the cut until no conversation was reconciling."""
        records = self.history.records
        start = next((r["t"] for r in records if r["kind"] == "nemesis" and r["type"] ==
                      "start" and str(r.get("fault", "")).startswith("failover")), None)
        rto = next((r["t"] - start for r in records if start is not None and
                    r["kind"] == "send" and r["type"] == "ok" and r["t"] >= start and
                    int(r["seq"]) >> 40 >= 1), None)
        cuts = {r["id"] for r in records if r["kind"] == "nemesis" and r["type"] == "start"
                and str(r.get("fault", "")).startswith(("partition", "isolate"))}
        heal = next((r["t"] for r in records if r["kind"] == "nemesis" and
                     r["type"] == "stop" and r["id"] in cuts), None)
        reconciled = (self._reconciled_at - heal if self._reconciled_at is not None and
                      heal is not None else None)
        return {"rto_s": round(rto, 2) if rto is not None else None,
                "reconciled_after_heal_s": round(max(0.0, reconciled), 2)
                if reconciled is not None else None}

    async def _move_homes(self, nid: str, fault: ScheduledFault,
                          record: dict[str, Any]) -> None:
        """`msgctl region failover` / `failback` in the drill's timeline; a failback waits
        (bounded by the converge timeout) until the failover is reconciled."""
        label = fault.label()
        self.history.add("nemesis", type="start", id=nid, fault=label)
        self.progress.faults[nid] = label
        self.on_change(self.progress)
        self._homes_moved = True
        try:
            if fault.kind == "failover":
                source, target = fault.args["regions"]
                outcome = await asyncio.to_thread(failover.run, lambda r: failover.failover(
                    r, source, target, []), self.target.home)
            else:
                region = fault.args["region"]
                deadline = time.monotonic() + self.drill.converge_timeout
                while True:
                    rows = await asyncio.to_thread(failover.run, failover.status,
                                                   self.target.home)
                    if not any(r["reconciling"] for r in rows):
                        if self._reconciled_at is None:
                            self._reconciled_at = self.history.now()
                        break
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
                outcome = await asyncio.to_thread(failover.run, lambda r: failover.failback(
                    r, region), self.target.home)
        finally:
            self._moving = max(0, self._moving - 1)
            self.history.add("nemesis", type="stop", id=nid, fault=label)
            self.progress.faults.pop(nid, None)
            self.on_change(self.progress)
        self.applied.append({**record, "description": f"{label}: {len(outcome.moved)} "
                             "conversation(s) moved",
                             "targets": [m["conv"] for m in outcome.moved]})

    def _later(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _stop_when(self, nid: str, label: str, done: Callable[[], bool],
                         pause: float, within: float = 300.0) -> None:
        self.progress.faults[nid] = label
        self.on_change(self.progress)
        t0 = time.monotonic()
        while not done() and time.monotonic() - t0 < within:
            await asyncio.sleep(pause)
        self.history.add("nemesis", type="stop", id=nid, fault=label)
        self.progress.faults.pop(nid, None)
        self.on_change(self.progress)

    def _running_again(self, names: list[str], old: dict[str, Any]) -> bool:
        now = {p["name"]: p for p in self.target.programs()}
        return all(n in now and now[n]["state"] == "RUNNING" and now[n].get("pid") != old.get(n)
                   for n in names)

    def _spec(self, fault: ScheduledFault, index: int) -> FaultSpec:
        a = fault.args
        if fault.kind == "partition":
            return FaultSpec("partition", list(a["regions"]), fault.duration,
                             {"one_way": bool(a.get("one_way"))})
        if fault.kind == "isolate":
            return FaultSpec("isolate", [a["region"]], fault.duration)
        if fault.kind == "link":
            return FaultSpec("link", list(a["regions"]), fault.duration, {
                "latency_ms": round(a.get("latency", 0) * 1000),
                "jitter_ms": round(a.get("jitter", 0) * 1000),
                "bandwidth_kbs": max(1, round(a["bandwidth"] / 1000)) if a.get("bandwidth")
                else 0,
                "reset": bool(a.get("reset")), "blackhole": bool(a.get("blackhole"))})
        options: dict[str, Any] = {"select": a.get("select", "all"),
                                   "seed": a.get("seed", self.seed + index)}
        if fault.kind == "kill":
            options["signal"] = a.get("signal", "KILL")
        return FaultSpec(fault.kind, [a["glob"]], fault.duration, options)

    async def _heal_later(self, fid: str, after: float) -> None:
        await asyncio.sleep(after)
        await self._heal(fid)

    async def _heal(self, fid: str | None) -> None:
        try:
            reply = await asyncio.to_thread(client.command, self.target.home, "chaos_heal",
                                            60.0, id=fid)
            healed = [h["id"] for h in reply.get("healed", [])]
        except MsgctlError:  # it expired by itself a moment ago
            healed = [fid] if fid else []
        for hid in healed:
            nid = self._open_faults.pop(hid, None)
            if nid is not None:
                self.history.add("nemesis", type="stop", id=nid, fault_id=hid)
                self.progress.faults.pop(nid, None)
        self.on_change(self.progress)

    async def _heal_all(self, wait: bool = True) -> None:
        await self._heal(None)
        if self._watchers and wait:  # kills and drops: until the targets are back (bounded)
            await asyncio.wait(set(self._watchers), timeout=120)
        for hid in list(self._open_faults):  # healed by its own timer: close the window
            nid = self._open_faults.pop(hid)
            self.history.add("nemesis", type="stop", id=nid, fault_id=hid)
            self.progress.faults.pop(nid, None)

    # -- convergence ----------------------------------------------------------------------
    async def _read_all(self, session: aiohttp.ClientSession) -> dict[tuple[str, str], Any]:
        jobs, keys = [], []
        for conv in self.convs:
            reader = conv.members[0]
            token = self.target.token(reader.user, "drill-reader")
            for region in self.target.regions:
                keys.append((conv.id, region.name))
                jobs.append(read_conversation(session, region, conv.id, token))
        results = await gather_limited(jobs)
        return dict(zip(keys, results, strict=True))

    def _settled(self, reads: dict[tuple[str, str], Any]) -> str:
        """Why the deployment has not converged yet ('' when it has)."""
        pending = sum(d.pending() for d in self.devices)
        if pending:
            return f"{pending} sends still retrying"
        acked = self._acked()
        for conv in self.convs:
            versions = []
            for region in self.target.names:
                msgs = reads[(conv.id, region)]
                if isinstance(msgs, BaseException):
                    return f"{region} cannot be read ({msgs})"
                cids = {(m["from"].split("/")[0], m["cid"]) for m in msgs}
                missing = [k for k in acked.get(conv.id, ()) if k not in cids]
                if missing:
                    return f"{region} lacks {len(missing)} acknowledged message(s) of {conv.id}"
                versions.append([(m["seq"], m["cid"]) for m in msgs])
            if any(v != versions[0] for v in versions):
                return f"the regions disagree on {conv.id}"
            final = reads[(conv.id, self.target.names[0])]
            for device in conv.members:
                if not device.connected.is_set():
                    continue
                mine = f"{device.user}/{device.device}"
                want = max((m["seq"] for m in final if m["from"] != mine), default=0)
                if device.seen.get(conv.id, 0) < want:
                    return f"{device.process} has not received {conv.id} up to {want}"
        return ""

    def _acked(self) -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for r in self.history.records:
            if r["kind"] == "send" and r["type"] == "ok":
                out[r["conv"]].add((r["process"].split("/")[0], r["cid"]))
        return out

    async def _reconciling(self) -> str:
        """Why a failover is not reconciled yet ('' when it is, or none was made)."""
        if not self._homes_moved:
            return ""
        try:
            rows = await asyncio.to_thread(failover.run, failover.status, self.target.home)
        except MsgctlError as exc:
            return f"region status unavailable ({exc})"
        waiting = sum(r["reconciling"] for r in rows)
        if waiting:
            return f"{waiting} conversation(s) still reconciling after the failover"
        if self._reconciled_at is None:
            self._reconciled_at = self.history.now()
        return ""

    async def _converge(self) -> float | None:
        t0 = time.monotonic()
        async with self.target.http() as session:
            while True:
                why = await self._reconciling()
                reads = await self._read_all(session)
                why = why or self._settled(reads)
                self.progress.note = why
                self.on_change(self.progress)
                if not why:
                    self.progress.note = ""
                    return round(time.monotonic() - t0, 2)
                if time.monotonic() - t0 > self.drill.converge_timeout:
                    self.history.add("phase", name="converge-timeout", reason=why)
                    return None
                await asyncio.sleep(CONVERGE_POLL)

    async def _final_read(self) -> None:
        async with self.target.http() as session:
            reads = await self._read_all(session)
        for (conv, region), msgs in reads.items():
            if isinstance(msgs, BaseException):
                self.history.add("read", region=region, conv=conv, msgs=[],
                                 error=str(msgs) or type(msgs).__name__)
            else:
                self.history.add("read", region=region, conv=conv, msgs=msgs, error=None)
