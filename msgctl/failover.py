"""Moving conversations between regions: what `msgctl region failover|move|failback|status`
do against a running multi-region cluster deployment.

Every change is a new epoch record written by compare-and-set in the new home's
data center (`runtime.core.homes` holds the rules), then announced in band: a
`home` record on the new home's ingress (it adopts the epoch) and on the old
home's (it is fenced, in order with its sends). An old home that cannot be reached
(down or cut off) is fenced by the new home's reconciler once it can be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka.admin import AdminClient

from msgctl.errors import MsgctlError, UsageError
from msgctl.home import Home
from runtime.adapters.cluster import engine_auth, kafka
from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.cassandra_store import CassandraStore
from runtime.adapters.cluster.kafka import INGRESS, AsyncProducer, common
from runtime.config import NodeConfig
from runtime.core import homes

FENCE_TIMEOUT_MS = 3000  # an old home that does not take its fence in this is unreachable
MOVE_WAIT = 60.0  # seconds a planned move waits for the old home's last messages


@dataclass
class Outcome:
    """What one command did, per conversation."""

    moved: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"moved": self.moved, "skipped": self.skipped, "notes": self.notes}


class Regions:
    """The running deployment's regions, their engines, and a store to change homes in."""

    def __init__(self, home: Home) -> None:
        deployment = home.deployment()
        if deployment is None:
            raise MsgctlError(f"no deployment under {home.root} (start one with 'msgctl up')",
                              3)
        names = [r["name"] for r in deployment.get("regions", [])]
        if deployment.get("backend") != "cluster" or len(names) < 2:
            raise UsageError("region commands need a running cluster deployment with two or "
                             "more regions (e.g. -t regions/two-region.yaml)")
        self.names = names
        self.configs: dict[str, NodeConfig] = {}
        for name in names:
            path = home.config / f"sequencer.{name}.json"
            try:
                self.configs[name] = NodeConfig.load(path)
            except (OSError, ValueError, TypeError) as exc:
                raise MsgctlError(f"cannot read the configuration of region {name}: "
                                  f"{path}: {exc}") from None
        if self.configs:  # the sequencers' engine identity (it may write any ingress)
            kafka.configure(engine_auth.kafka_settings(next(iter(self.configs.values())).engines))
        self._stores: dict[str, CassandraStore] = {}
        self._producers: dict[str, AsyncProducer] = {}

    def check(self, region: str, what: str = "region") -> str:
        if region not in self.names:
            raise UsageError(f"unknown {what} {region!r} (this deployment has "
                             f"{', '.join(self.names)})")
        return region

    async def store(self, region: str) -> CassandraStore:
        """A store connected in `region`'s data center (the authority for its changes)."""
        store = self._stores.get(region)
        if store is None:
            store = CassandraStore.from_config(self.configs[region].engines,
                                               create_schema=False, connect_timeout=5.0)
            await store.connect()
            self._stores[region] = store
        return store

    def producer(self, region: str) -> AsyncProducer:
        producer = self._producers.get(region)
        if producer is None:
            producer = AsyncProducer(self.configs[region].engines.kafka_bootstrap,
                                     timeout_ms=FENCE_TIMEOUT_MS)
            self._producers[region] = producer
        return producer

    async def announce(self, region: str, change: env.HomeChange) -> bool:
        """Put `change` on `region`'s ingress; False when the region cannot be reached."""
        try:
            await self.producer(region).send(INGRESS, change.conv.encode(), change.encode())
            return True
        except Exception:
            return False

    async def reachable(self, region: str) -> bool:
        """Whether `region`'s Kafka answers a metadata request in FENCE_TIMEOUT_MS."""
        admin = AdminClient(common(self.configs[region].engines.kafka_bootstrap) |
                            {"log_level": 0})

        def ask() -> bool:
            try:
                admin.list_topics(INGRESS, timeout=FENCE_TIMEOUT_MS / 1000)
                return True
            except Exception:
                return False
        return await asyncio.get_running_loop().run_in_executor(None, ask)

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
        loop = asyncio.get_running_loop()
        for producer in self._producers.values():
            await loop.run_in_executor(None, producer.close)


async def current(store: CassandraStore, conv: str) -> homes.HomeRecord:
    record = await store.home_record(conv)
    if record is not None:
        return record
    found = await store.get_conversation(conv)
    if found is None:
        raise UsageError(f"unknown conversation {conv!r}")
    return homes.initial(conv, found.home)


async def _change(regions: Regions, store: CassandraStore, now: homes.HomeRecord, to: str,
                  kind: str, out: Outcome) -> homes.HomeRecord | None:
    held = await store.head(now.conv)
    try:
        record = homes.next_record(now, to, kind, held=held, at=int(time.time() * 1000))
    except homes.HomeError as exc:
        out.skipped.append({"conv": now.conv, "reason": str(exc)})
        return None
    other = await store.put_home(record)
    if other is not None:
        out.skipped.append({"conv": now.conv, "reason": f"epoch {record.epoch} was taken "
                            f"meanwhile (homed in {other.home})"})
        return None
    if record.active:
        await regions.announce(to, env.HomeChange(record.conv, record.epoch, to, record.base))
    fenced = await regions.announce(now.home, env.HomeChange(record.conv, record.epoch, to,
                                                             record.base))
    out.moved.append({"conv": record.conv, "from": now.home, "to": to, "epoch": record.epoch,
                      "base": record.base, "old_home_told": fenced})
    return record


async def failover(regions: Regions, source: str, target: str, convs: list[str],
                   progress: Callable[[str], None] = lambda _s: None) -> Outcome:
    """Move `convs` (empty: all) homed in `source` to `target` now, from what `target`
    holds; `source` is fenced now if it can be reached, else once it comes back."""
    regions.check(source)
    regions.check(target, "target region")
    if source == target:
        raise UsageError(f"cannot fail {source} over to itself")
    store = await regions.store(target)
    out = Outcome()
    if not convs:
        progress("listing conversations")
        convs = [c for c, _h in await store.all_conversations()]
    for conv in convs:
        now = await current(store, conv)
        if now.home != source:
            if len(convs) == 1 or now.home == target:
                out.skipped.append({"conv": conv, "reason": f"homed in {now.home}"})
            continue
        progress(f"moving {conv}")
        await _change(regions, store, now, target, "failover", out)
    if any(not m["old_home_told"] for m in out.moved):
        out.notes.append(f"{source} could not be reached: it is fenced when it comes back, "
                         "and what it acknowledged meanwhile is reconciled then")
    return out


async def _wait_active(store: CassandraStore, conv: str, epoch: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = await store.home_record(conv)
        if record is not None and record.epoch == epoch and record.active:
            return True
        await asyncio.sleep(0.2)
    return False


async def move(regions: Regions, conv: str, target: str, kind: str = "move",
               progress: Callable[[str], None] = lambda _s: None,
               wait: float = MOVE_WAIT) -> Outcome:
    """A planned move of a live conversation: the old home is fenced, the new one takes
    over after the old home's last message (no gap, no repeat)."""
    regions.check(target, "target region")
    store = await regions.store(target)
    now = await current(store, conv)
    out = Outcome()
    if now.home == target:
        raise UsageError(f"conversation {conv} is already homed in {target}")
    # a planned move needs the old home to answer: refuse before writing anything
    if not await regions.reachable(now.home):
        raise MsgctlError(f"{now.home} (the home of {conv}) cannot be reached; a planned "
                          f"move needs it: use 'msgctl region failover {now.home} --to "
                          f"{target} --conversations {conv}'")
    record = await _change(regions, store, now, target, kind, out)
    if record is None:
        return out
    progress(f"waiting for {now.home} to hand {conv} over")
    if not await _wait_active(store, conv, record.epoch, wait):
        out.notes.append(f"{conv}: {target} has not taken over after {wait:.0f}s; it will "
                         "once it holds everything the old home made")
    return out


async def failback(regions: Regions, region: str,
                   progress: Callable[[str], None] = lambda _s: None) -> Outcome:
    """Give `region` back the conversations created there, once each is reconciled."""
    regions.check(region)
    store = await regions.store(region)
    moved: list[homes.HomeRecord] = []
    for conv, created in await store.all_conversations():
        if created != region:
            continue
        record = await store.home_record(conv)
        if record is not None and record.home != region:
            moved.append(record)
    waiting = [r for r in moved if not r.reconciled or not r.active]
    if waiting:
        raise UsageError(f"{len(waiting)} conversation(s) moved from {region} are not "
                         f"reconciled yet (e.g. {waiting[0].conv} in {waiting[0].home}); "
                         "wait until 'msgctl region status' shows none reconciling")
    out = Outcome()
    for record in moved:
        progress(f"moving {record.conv} back")
        one = await move(regions, record.conv, region, "failback", progress)
        out.moved += one.moved
        out.skipped += one.skipped
        out.notes += one.notes
    return out


async def _records(store: CassandraStore) -> dict[str, homes.HomeRecord]:
    out = {}
    for conv, created in await store.all_conversations():
        record = await store.home_record(conv)
        out[conv] = record if record is not None else homes.initial(conv, created)
    return out


def _merge(a: homes.HomeRecord, b: homes.HomeRecord) -> homes.HomeRecord:
    """One view of a conversation's newest epoch from two data centers' (during a
    partition each may hold part of it: the record in one, the old home's fence in the
    other)."""
    if a.epoch != b.epoch:
        return a if a.epoch > b.epoch else b
    return replace(a, home=a.home or b.home, previous=a.previous or b.previous,
                   kind=a.kind or b.kind, base=a.base if a.base is not None else b.base,
                   at=a.at or b.at, held=a.held or b.held,
                   fenced_last=a.fenced_last if a.fenced_last is not None else b.fenced_last,
                   reconciled=a.reconciled or b.reconciled)


async def status(regions: Regions) -> list[dict[str, Any]]:
    """Per region: conversations homed there, moved there, reconciling, fenced; read from
    every data center that answers (during a partition each knows part of the story)."""
    rows = {name: {"region": name, "homed": 0, "moved_in": 0, "reconciling": 0,
                   "awaiting_fence": 0, "max_epoch": 0, "reachable": True}
            for name in regions.names}
    merged: dict[str, homes.HomeRecord] = {}
    for name in regions.names:
        try:
            view = await _records(await regions.store(name))
        except Exception:
            rows[name]["reachable"] = False
            continue
        for conv, record in view.items():
            merged[conv] = _merge(merged[conv], record) if conv in merged else record
    if not any(r["reachable"] for r in rows.values()):
        raise MsgctlError("no region's store answers")
    for record in merged.values():
        row = rows.get(record.home)
        if row is None:
            continue
        row["homed"] += 1
        if record.epoch:
            row["moved_in"] += 1
            row["max_epoch"] = max(row["max_epoch"], record.epoch)
            if not record.reconciled or not record.active:
                row["reconciling"] += 1
            if record.fenced_last is None and record.previous in rows:
                rows[record.previous]["awaiting_fence"] += 1
    return list(rows.values())


def run(coro_fn: Callable[[Regions], Any], home: Home) -> Any:
    """Run one operation with the deployment's regions, closing what it opened."""
    async def main() -> Any:
        regions = Regions(home)
        try:
            return await coro_fn(regions)
        finally:
            await regions.close()
    try:
        return asyncio.run(main())
    except (MsgctlError, KeyboardInterrupt):
        raise
    except Exception as exc:  # an engine away: one line, not a traceback
        raise MsgctlError(f"{type(exc).__name__}: {exc}") from None
