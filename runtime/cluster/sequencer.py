"""The cluster sequencer: Kafka exactly-once read-process-write.

The owner of `msg.ingress` consumes a batch of requests (read_committed), plans
it with the sequencing kernel the embedded ingest runs too (`runtime.sequencing`:
seqs, dedupe, watermark rules for receipts), and
in ONE transaction produces the results to `msg.events`, the changed
per-conversation snapshots and its next input offsets to the compacted
`msg.seq-state`. The in-memory state changes only after the commit. A new owner
restores the state and the offsets from `msg.seq-state` before it processes
anything; a zombie is fenced by `init_transactions` (same transactional id,
higher epoch). Transactions start at least `txn_interval` apart
(`runtime.core.pacing`): the sends that arrive meanwhile join the next one.

The offsets travel as a record of `msg.seq-state`, not through the consumer
group (`send_offsets_to_transaction`): that cost each transaction two more
broker round trips and a marker on `__consumer_offsets`. The group's offsets
are still committed, outside the transaction and at most once a second, for
the operators' lag tools; they are read only when `msg.seq-state` holds no
offsets yet (a region upgraded from a version that committed through the group).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NoReturn

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.kafka import (
    EVENTS,
    INGRESS,
    SEQ_STATE,
    TXN_LINGER_MS,
    Worker,
    common,
    exit_for_restart,
    run_or_exit,
    stop_loop,
    take,
)
from runtime.config import DEFAULT_TXN_INTERVAL_MS
from runtime.core.homes import HomeRecord
from runtime.core.pacing import TxnPacer
from runtime.core.seqsnapshot import (
    OFFSETS_KEY,
    LruMarks,
    SnapshotBook,
    head_key,
    marks_key,
    offsets_value,
    parse_key,
    parse_offsets,
)
from runtime.core.watermarks import MarkOp, Watermark
from runtime.metrics import METRICS
from runtime.ports import HomeStore, MessageStore, Receipt, Send, StateStore
from runtime.sequencing import SequencingKernel, load_marks

log = logging.getLogger("msgctl.sequencer")

MAX_BATCH = 500
# a transaction starts at least this long after the previous one (runtime.core.pacing)
TXN_INTERVAL = DEFAULT_TXN_INTERVAL_MS / 1000
TXN_DEADLINE = 15  # seconds; the calls inside have 10 s timeouts of their own
GROUP_COMMIT_S = 1.0  # the group's offsets (for lag tools only) are committed this often


_COORDINATOR_WAIT = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                     KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT}


def _exit(reason: str) -> NoReturn:
    """Leave at once: the supervisor restarts the sequencer, which restores its state."""
    exit_for_restart(log, f"{reason} (a fresh process restores from {SEQ_STATE})")


class KafkaSequencer:
    def __init__(self, bootstrap: str, region: str, store: MessageStore, state: StateStore,
                 *, group: str | None = None, homes: HomeStore | None = None,
                 txn_interval: float = TXN_INTERVAL) -> None:
        self.bootstrap = bootstrap
        self.region = region
        self.store = store
        # epochs of conversations that moved region: looked up once per conversation per
        # process, then kept current by `home` records on the ingress
        self.homes = homes
        self._homes_checked: set[str] = set()
        self.marks_store = state
        self.group = group or f"msgctl-sequencer-{region}"
        self.kernel = SequencingKernel(store)
        self.pacer = TxnPacer(txn_interval)
        self.book = SnapshotBook()
        self.marks: LruMarks = LruMarks()
        # ingress partition -> next offset, as of the last committed transaction
        self.offsets: dict[int, int] = {}
        self._group_commit_at = 0.0
        self._group_pending = False  # committed positions not yet in the group
        self.worker = Worker("sequencer-kafka")
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False
        self.failed: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self.producer = Producer(common(self.bootstrap) | {
            "transactional.id": f"msgctl-sequencer-{self.region}",
            "enable.idempotence": True, "acks": "all", "linger.ms": TXN_LINGER_MS,
            "compression.type": "lz4", "transaction.timeout.ms": 60_000,
            # the coordinator answers CONCURRENT_TRANSACTIONS while the previous commit's
            # markers land; librdkafka's default 100 ms backoff made every transaction
            # with offsets ~100 ms (9 ms with this, measured on one broker)
            "retry.backoff.ms": 5,
            # librdkafka backs off exponentially up to 1 s by default: a busy coordinator
            # answering CONCURRENT_TRANSACTIONS a few times stretched single commits
            "retry.backoff.max.ms": 20,
        })
        # fences any older instance and aborts its open transaction
        await self.worker.run(self.producer.init_transactions, 60)
        t0 = time.monotonic()
        count = await self.worker.run(self._restore)
        log.info("restored %d seq-state records (%d conversations) in %.2fs", count,
                 len(self.kernel.state.heads), time.monotonic() - t0)
        self.consumer = Consumer(common(self.bootstrap) | {
            "group.id": self.group, "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        })
        # One owner per region takes every partition by assignment, not by group
        # membership: no rebalance can revoke it in the middle of a transaction. Zombies
        # are fenced by the transactional id; input offsets commit inside each
        # transaction as a msg.seq-state record.
        await self.worker.run(self._assign)
        self._task = asyncio.create_task(run_or_exit(self._loop(), "sequencer loop", log),
                                         name="sequencer")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await stop_loop(self._task, self.worker, self.consumer)

    def _assign(self) -> None:
        assert self.consumer is not None
        meta = self.consumer.list_topics(INGRESS, timeout=30)
        topic = meta.topics.get(INGRESS)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaException(topic.error if topic is not None and topic.error else
                                 KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        parts = [TopicPartition(INGRESS, p) for p in topic.partitions]
        if all(tp.partition in self.offsets for tp in parts):
            self.consumer.assign([TopicPartition(INGRESS, tp.partition,
                                                 self.offsets[tp.partition]) for tp in parts])
            return
        deadline = time.monotonic() + 30
        while True:
            try:
                committed = self.consumer.committed(parts, timeout=30)
                for tp in committed:
                    if tp.error is not None:  # guessing an offset could replay or skip
                        raise KafkaException(tp.error)
                break
            except KafkaException as exc:
                # a fresh broker answers NOT_COORDINATOR while it loads __consumer_offsets
                if exc.args[0].code() not in _COORDINATOR_WAIT or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for tp in committed:
            if tp.partition in self.offsets:  # the transactions' own record wins
                tp.offset = self.offsets[tp.partition]
            elif tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
        self.consumer.assign(committed)

    def _restore(self) -> int:
        """Read `msg.seq-state` to its end (read_committed) into the state."""
        consumer = Consumer(common(self.bootstrap) | {
            "group.id": f"{self.group}-restore", "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True,
        })
        try:
            meta = consumer.list_topics(SEQ_STATE, timeout=30)
            parts = list(meta.topics[SEQ_STATE].partitions)
            pending: set[int] = set()
            assign: list[TopicPartition] = []
            for p in parts:
                low, high = consumer.get_watermark_offsets(TopicPartition(SEQ_STATE, p), 30)
                if high > low:
                    pending.add(p)
                    assign.append(TopicPartition(SEQ_STATE, p, OFFSET_BEGINNING))
            if not assign:
                return 0
            consumer.assign(assign)
            count = 0
            while pending:
                for rec in consumer.consume(1000, 1.0):
                    err = rec.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(rec.partition())
                            continue
                        raise KafkaException(err)
                    count += 1
                    self._apply_state(rec.key(), rec.value())
            return count
        finally:
            consumer.close()

    def _apply_state(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        try:
            kind, conv, user = parse_key(key)
            snap = env.loads(value)
            if kind == "o":
                self.offsets = parse_offsets(snap)
            elif kind == "h":
                self.book.restore(self.kernel.state, conv, snap)
            elif user is not None:
                self.marks.put((conv, user), Watermark(int(snap["d"]), int(snap["r"])))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            if key[:5] == b'["h",' or key == OFFSETS_KEY:
                # guessing a head could hand out a seq twice, guessing an offset could
                # skip a send: refuse to start instead
                what = "input offsets" if key == OFFSETS_KEY else "head snapshot"
                raise RuntimeError(f"unreadable {what} {key!r} in {SEQ_STATE}: {exc}") \
                    from exc
            log.warning("skipping unreadable seq-state record %r: %s", key, exc)

    # -- the loop ------------------------------------------------------------
    async def _loop(self) -> None:
        assert self.consumer is not None
        while True:
            records = await self.worker.run(take, self.consumer, MAX_BATCH, 0.1)
            records = [r for r in records if r.error() is None]
            if not records:
                if self._group_pending:  # the input went quiet: bring the group up to date
                    await self.worker.run(self._commit_group, dict(self.offsets))
                continue
            wait = self.pacer.delay(time.monotonic(), len(records), MAX_BATCH)
            if wait > 0:  # the sends that arrive meanwhile join this transaction
                await asyncio.sleep(wait)
                more = await self.worker.run(take, self.consumer, MAX_BATCH - len(records), 0)
                records += [r for r in more if r.error() is None]
            self.pacer.started(time.monotonic())
            try:
                await self._process(records)
            except KafkaException as exc:
                err = exc.args[0]
                if not err.fatal() and err.txn_requires_abort():
                    log.warning("transaction aborted, the batch is retried: %s", err)
                    await self._abort_and_rewind()
                    continue
                # fenced (another owner took over), fatal, or a commit whose outcome is
                # unknown (timed out): only a fresh process restoring from msg.seq-state
                # is sure to continue the chain without reusing a seq
                _exit(f"sequencer transaction failed: {err}")
            except Exception as exc:
                # a store lookup failed (Cassandra away): nothing was produced; plan the
                # same batch again from the unchanged state
                log.warning("sequencer batch failed, retrying it: %r", exc)
                self.failed = exc
                await self._abort_and_rewind()
                await asyncio.sleep(0.5)

    async def _abort_and_rewind(self) -> None:
        assert self.producer is not None and self.consumer is not None
        try:
            await asyncio.wait_for(self.worker.run(self.producer.abort_transaction, 30),
                                   TXN_DEADLINE)
        except TimeoutError:
            _exit(f"abort stuck for {TXN_DEADLINE}s")
        except KafkaException as exc:
            log.warning("abort failed: %s", exc)
        # back to the last committed input: the batch is planned again from unchanged state
        try:
            await asyncio.wait_for(self.worker.run(self._assign), TXN_DEADLINE)
        except TimeoutError:
            _exit("cannot rewind to the committed offsets")

    async def _process(self, records: list[Any]) -> None:
        assert self.producer is not None and self.consumer is not None
        t0 = time.perf_counter()
        sends: list[Send] = []
        answer_to: list[tuple[str, str]] = []  # (gateway, region) waiting for each send
        ops: list[MarkOp] = []
        changes: list[env.HomeChange] = []
        for rec in records:
            try:
                req = env.decode_ingress(rec.value())
            except Exception as exc:  # ValueError by contract; nothing else may wedge us
                # a poison record must cost one record, never the partition
                METRICS.errors.labels("bad_ingress_record").inc()
                log.warning("dropping malformed ingress record at %s/%s: %s", rec.partition(),
                            rec.offset(), exc)
                continue
            if isinstance(req, env.SendRequest):
                sends.append(req.send)
                answer_to.append((req.gw, req.rg))
            elif isinstance(req, env.HomeChange):
                changes.append(req)
            else:
                ops.append(req.op)
        if sends:
            METRICS.ingress_lag_seconds.observe(max(0.0, time.time() - sends[0].ts / 1000))
        # a home change applies to the whole batch, sends before it included: refusing a
        # send that was never acknowledged is always safe (its client retries)
        fenced_now = await self._homes({s.conv for s in sends} | {op.conv for op in ops},
                                       changes)
        state = self.kernel.state
        ops = [op for op in ops if op.conv not in state.fenced]
        batch = await self.kernel.plan(sends, also={op.conv for op in ops})
        out: list[tuple[str, bytes, bytes]] = []  # (topic, key, value)
        for i, (send, (gw, rg)) in enumerate(zip(sends, answer_to, strict=True)):
            a = batch.plan.assignments[i]
            if a.fenced:
                # homed elsewhere now: its gateway times out and the client retries there
                METRICS.errors.labels("send_to_old_home").inc()
                continue
            if a.deferred:
                # only the store can tell a retry from a new message here, and it is still
                # being written: no answer, the client retries (runtime.sequencing)
                METRICS.errors.labels("send_store_behind").inc()
                continue
            if a.duplicate:
                out.append((EVENTS, a.conv.encode(), env.duplicate_event(
                    a.conv, send.sender, send.cid, a.seq, a.prev, gw, rg)))
            else:
                msg = batch.made_for(i)
                assert msg is not None
                out.append((EVENTS, a.conv.encode(), env.message_event(msg, gw, rg)))
        # receipts: the head used for clamping includes this batch's new messages
        current = await load_marks(ops, lambda conv, user: self.marks.get((conv, user)),
                                   self.marks_store.watermark)
        marks = self.kernel.marks(batch, ops, current)
        for conv, user, kind, seq, device in marks.receipts():
            mark = marks.marks[(conv, user)]
            out.append((EVENTS, conv.encode(), env.receipt_event(
                Receipt(conv, user, kind, seq, device), mark.delivered, mark.read)))
        for conv, snap in self.book.preview(batch.plan).items():
            out.append((SEQ_STATE, head_key(conv), env.dumps(snap)))
        for (conv, user), mark in marks.marks.items():
            out.append((SEQ_STATE, marks_key(conv, user),
                        env.dumps({"d": mark.delivered, "r": mark.read})))
        t1 = time.perf_counter()
        try:
            positions = await asyncio.wait_for(self.worker.run(self._transact, out),
                                               TXN_DEADLINE)
        except TimeoutError:
            # librdkafka calls can outlast their own timeouts when the broker goes away
            # mid-transaction; a fresh process restores from msg.seq-state instead
            _exit(f"transaction stuck for {TXN_DEADLINE}s")
        METRICS.txn_seconds.observe(time.perf_counter() - t1)
        # committed: only now does the state move
        self.offsets.update(positions)
        self.kernel.commit(batch)
        self.book.note(batch.plan)
        for k, mark in marks.marks.items():
            self.marks.put(k, mark)
        METRICS.messages.inc(len(batch.made))
        await self._report_fences(fenced_now)
        METRICS.append_seconds.observe(time.perf_counter() - t0)

    # -- homes (region failover) ----------------------------------------------
    def _apply_home(self, record: HomeRecord | env.HomeChange) -> bool:
        """Take a conversation's epoch into the state; True when it fences this region."""
        state = self.kernel.state
        if record.home == self.region:
            if record.base is None:  # a planned move still waiting for the old home
                state.fence(record.conv, record.epoch)
            else:
                state.adopt(record.conv, record.epoch, record.base)
            return False
        state.fence(record.conv, record.epoch)
        return record.conv in state.fenced

    async def _homes(self, convs: set[str], changes: list[env.HomeChange]
                     ) -> dict[str, int]:
        """Apply the epochs of `convs` seen for the first time (from the store) and the
        in-band `changes`; the conversations this region is fenced from now, by epoch."""
        fenced: dict[str, int] = {}
        if self.homes is not None:
            first = [c for c in convs if c not in self._homes_checked]
            records = await asyncio.gather(*(self.homes.home_record(c) for c in first))
            for conv, record in zip(first, records, strict=True):
                if record is not None and self._apply_home(record) and \
                        record.fenced_last is None:
                    fenced[conv] = record.epoch
            self._homes_checked.update(first)
        for change in changes:
            log.info("conversation %s: epoch %d homed in %s (base %s)", change.conv,
                     change.epoch, change.home, change.base)
            self._homes_checked.add(change.conv)
            if self._apply_home(change):
                fenced[change.conv] = change.epoch
        return fenced

    async def _report_fences(self, fenced: dict[str, int]) -> None:
        """Tell the new home the last seq made here (after this batch's commit, so the
        head is final): its reconciliation waits for it."""
        if self.homes is None:
            return
        for conv, epoch in fenced.items():
            last = await self.kernel.head(conv)
            try:
                await self.homes.set_fenced(conv, epoch, last)
                log.info("conversation %s fenced by epoch %d at seq %d", conv, epoch, last)
            except Exception as exc:  # the new home sends the fence again until it sees it
                log.warning("could not record the fence of %s: %s", conv, exc)

    def _transact(self, out: list[tuple[str, bytes, bytes]]) -> dict[int, int]:
        """Produce `out` and the input positions in one transaction; the positions."""
        assert self.producer is not None and self.consumer is not None
        producer, consumer = self.producer, self.consumer
        read = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        positions = self.offsets | {tp.partition: tp.offset for tp in read}
        producer.begin_transaction()
        for topic, key, value in [*out, (SEQ_STATE, OFFSETS_KEY, offsets_value(positions))]:
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.commit_transaction(10)
        self._group_pending = True
        if time.monotonic() - self._group_commit_at >= GROUP_COMMIT_S:
            self._commit_group(positions)
        return positions

    def _commit_group(self, positions: dict[int, int]) -> None:
        """The group's offsets, for lag tools only (a restart reads msg.seq-state's)."""
        assert self.consumer is not None
        self._group_commit_at = time.monotonic()
        self._group_pending = False
        try:  # committed already: nothing here may fail the batch
            self.consumer.commit(offsets=[TopicPartition(INGRESS, p, o)
                                          for p, o in positions.items()], asynchronous=True)
        except Exception as exc:
            log.debug("group offsets not committed: %s", exc)
