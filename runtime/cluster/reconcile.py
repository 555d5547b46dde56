"""The new home's side of a region failover: fence the old home, activate, reconcile.

Runs in the sequencer process of every region of a multi-region cluster, over the
conversations moved to this region (`moved_to`), every ROUND seconds:

1. **Fence**: until the old home has recorded `fenced_last` (the last seq it made),
   send it a `home` record on its ingress. It is processed in order with the sends
   there, so nothing it takes after it is sequenced. During a partition the send
   fails and is tried again the next round; after the heal it lands.
2. **Activate** (a planned `move`): once the old home is fenced and this region's store
   holds its chain down to what was held when the move began, the epoch's base is its
   last seq, and this region's sequencer is told in band (no gap, no repeat).
3. **Reconcile** (a `failover`): once the old home is fenced and the store holds its
   whole chain from `fenced_last` down to the base, every orphan (a message of an old
   epoch above the base, acknowledged by the old home during the split) whose sender
   and cid the new epoch lacks is sent again to this region's sequencer, naming the
   seq it was first acknowledged under (`moved_from`). Once the new epoch holds every
   one of them, the orphans are deleted and the epoch is marked reconciled.

The rules are `runtime.core.homes`; this is their I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import INGRESS, AsyncProducer
from runtime.core import homes
from runtime.ports import Message, Send

log = logging.getLogger("msgctl.reconcile")

ROUND = 1.0  # seconds between two passes over the moved conversations
PAGE = 200
SWEEP_EVERY = 30.0  # seconds between two looks for late orphans of a reconciled epoch
MAX_NEW_EPOCH = 100_000  # messages of the new epoch read to find retried cids


class Reconciler:
    def __init__(self, region: str, store: Any, local: AsyncProducer,
                 peers: dict[str, str]) -> None:
        self.region = region
        self.store = store  # CassandraStore: MessageStore + the homes methods
        self.local = local
        self.peers = dict(peers)
        self._producers: dict[str, AsyncProducer] = {}
        self._announced: set[tuple[str, int]] = set()  # adoptions sent in band this process
        self._swept: dict[str, float] = {}  # conv -> when to look for late orphans again
        self._task: asyncio.Task[None] | None = None
        self.reconciled: dict[str, float] = {}  # conv -> seconds from failover to reconciled
        self.ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconcile")
        self.ready = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for producer in self._producers.values():
            await asyncio.get_running_loop().run_in_executor(None, producer.close)

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Cassandra or Kafka away: the next round tries again
                log.warning("reconciliation round failed: %s", exc)
            await asyncio.sleep(ROUND)

    async def round(self) -> None:
        for conv, epoch in (await self.store.moved_to(self.region)).items():
            record = await self.store.home_record(conv)
            if record is None:
                continue
            if record.epoch != epoch or record.home != self.region:
                if record.epoch > epoch:  # moved on since: no longer ours to reconcile
                    await self.store.forget_moved(self.region, conv)
                continue
            try:
                await self.step(record)
            except Exception as exc:
                log.warning("conversation %s (epoch %d): %s", conv, epoch, exc)

    async def step(self, record: homes.HomeRecord) -> None:
        """One pass over one conversation moved here."""
        if record.active and (record.conv, record.epoch) not in self._announced:
            # this process's sequencer may have seen the conversation before the move
            await self._send(self.region, env.HomeChange(record.conv, record.epoch,
                                                         self.region, record.base))
            self._announced.add((record.conv, record.epoch))
        if record.fenced_last is None:
            await self._fence(record)
            return
        if not record.active:
            await self._activate(record)
            return
        if not record.reconciled:
            await self._reconcile(record)
        elif time.monotonic() >= self._swept.get(record.conv, 0.0):
            # a late copy of an orphan (a replayed event) is removed again
            self._swept[record.conv] = time.monotonic() + SWEEP_EVERY
            await self._sweep(record)

    async def _fence(self, record: homes.HomeRecord) -> None:
        if record.previous == self.region or record.previous not in self.peers:
            return
        try:
            await self._send(record.previous, env.HomeChange(record.conv, record.epoch,
                                                             record.home, record.base))
        except Exception as exc:  # cut off: the next round sends it again
            log.info("fence of %s for %s not delivered yet: %s", record.previous,
                     record.conv, exc)

    async def _chain(self, record: homes.HomeRecord, down_to: int) -> homes.ChainWalk:
        assert record.fenced_last is not None
        found: dict[int, int] = {}
        seq = record.fenced_last
        # read the chain a page at a time, newest first, following prev links
        while seq > down_to and seq not in found:
            msg = await self.store.message(record.conv, seq)
            if msg is None:
                break
            found[seq] = msg.prev
            seq = msg.prev
        return homes.walk_chain(record.fenced_last, down_to, found.get)

    async def _activate(self, record: homes.HomeRecord) -> None:
        assert record.fenced_last is not None
        walk = await self._chain(record, record.held)
        if not walk.complete:
            return  # replication of the old home's last messages is still under way
        await self.store.set_home_base(record.conv, record.epoch, record.fenced_last)
        await self._send(self.region, env.HomeChange(record.conv, record.epoch, self.region,
                                                     record.fenced_last))
        self._announced.add((record.conv, record.epoch))
        await self.store.set_reconciled(record.conv, record.epoch)
        log.info("conversation %s moved here (epoch %d) after seq %d", record.conv,
                 record.epoch, record.fenced_last)

    async def _orphans(self, record: homes.HomeRecord) -> list[Message]:
        """The old epochs' messages above the base (they sort before the new epoch's)."""
        assert record.base is not None
        out: list[Message] = []
        after = record.base
        while True:
            page = await self.store.messages(record.conv, after, PAGE)
            for msg in page:
                if msg.seq >= record.first_seq():
                    return out
                if homes.is_orphan(msg.seq, record):
                    out.append(msg)
            if len(page) < PAGE:
                return out
            after = page[-1].seq

    async def _reconcile(self, record: homes.HomeRecord) -> None:
        assert record.fenced_last is not None and record.base is not None
        walk = await self._chain(record, record.base)
        if not walk.complete and record.fenced_last > record.base:
            return  # the old home's chain has not fully reached this region yet
        orphans = await self._orphans(record)
        present = {(m.sender, m.cid) for m in await self.store.messages(
            record.conv, record.first_seq() - 1, MAX_NEW_EPOCH)}
        resend = homes.to_resend(((m.seq, m.sender, m.cid) for m in orphans), present)
        by_seq = {m.seq: m for m in orphans}
        for seq in resend:
            m = by_seq[seq]
            send = Send(m.conv, m.cid, m.sender, m.from_device, m.kind, m.body, m.media, m.ts,
                        m.moved_from or m.seq)
            await self._send(self.region, env.SendRequest(send, "reconcile", self.region))
        if resend:
            log.info("conversation %s: %d orphans sent again in epoch %d", record.conv,
                     len(resend), record.epoch)
            return  # the next round checks they are stored, then deletes the orphans
        await self.store.delete_messages(record.conv, [m.seq for m in orphans])
        await self.store.set_reconciled(record.conv, record.epoch)
        took = time.time() - record.at / 1000 if record.at else 0.0
        self.reconciled[record.conv] = took
        log.info("conversation %s reconciled (epoch %d): %d orphans moved, %.1fs after the "
                 "failover", record.conv, record.epoch, len(orphans), took)

    async def _sweep(self, record: homes.HomeRecord) -> None:
        if record.base is None or record.kind != "failover":
            return
        orphans = await self._orphans(record)
        if not orphans:
            return
        present = {(m.sender, m.cid) for m in await self.store.messages(
            record.conv, record.first_seq() - 1, MAX_NEW_EPOCH)}
        if homes.to_resend(((m.seq, m.sender, m.cid) for m in orphans), present):
            # an orphan that was never moved: reconcile again
            log.warning("conversation %s: orphans found after reconciliation; moving them",
                        record.conv)
            await self._reconcile(record)
            return
        await self.store.delete_messages(record.conv, [m.seq for m in orphans])

    async def _send(self, region: str, record: Any) -> None:
        producer = self.local if region == self.region else self._producer(region)
        conv = record.conv if isinstance(record, env.HomeChange) else record.send.conv
        await producer.send(INGRESS, conv.encode(), record.encode())

    def _producer(self, region: str) -> AsyncProducer:
        producer = self._producers.get(region)
        if producer is None:
            producer = self._producers[region] = AsyncProducer(self.peers[region],
                                                               timeout_ms=3000)
        return producer
