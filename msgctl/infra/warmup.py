"""Warm a freshly started Kafka, Cassandra or MirrorMaker 2 before the deployment reports
ready.

A JVM runs its hot paths interpreted until its JIT has compiled them, and the
compiling takes CPU too. On this project's one-region stack the first minute
after `msgctl up` delivered at two to three times the latency of a warm stack.
So the supervisor drives every Kafka and Cassandra it starts through the
requests the runtimes make, on a topic or keyspace of its own, until the JVM's
compiler threads go quiet (`JitWatch`) or the time runs out, and `msgctl up`
waits for that:

- Kafka: an idempotent lz4 producer (the gateways' ingress), a consumer whose
  records a transactional producer writes again, in the same transaction as a
  keyed state record per key and a record of the consumer's positions on a
  compacted topic (the sequencer's events, `msg.seq-state` snapshots and
  offsets: two partitions per transaction), more transactional producers
  beside it, and a read_committed consumer (the store writer and push), on
  `msgctl.warmup.in`, `msgctl.warmup.out` and `msgctl.warmup.state`. The
  topics and consumer groups are deleted afterwards.
- Cassandra: msgctl's own `CassandraStore` in the keyspace
  `msgctl_warmup_<data center>` (replicated to that data center alone):
  conversations made with lightweight transactions, messages appended with
  their cid rows and heads in the store writer's batches (one to three messages
  of each of one to four conversations; each head in its messages' own mutation
  where the store can put it there, as the store writer does), read back,
  cursors, watermarks and push tokens. The sequence numbers wrap, so every
  warm-up overwrites the same few MB.
- MirrorMaker 2 (several regions): transactions of ten records, as the
  sequencers write `msg.events`, on `msgctl.warmup.mirror` of every region it
  copies from, read back (read_committed) from the copies in its own region.
  Those topics stay, their records gone after ten minutes: MM2 restarts its
  copying tasks whenever the set of topics it copies changes, so deleting them
  at the end would pause `msg.events` for the first seconds of traffic. The
  copies are read by assignment, not in a consumer group, so none is left.

The JIT compiles for the requests it sees: while the warm-up's transactions
touched one partition and its store batches held ten messages of one
conversation, 147 of Kafka's methods reached the top tier only in the first
20 s of real traffic; with these shapes, 97 in one run (Cassandra's did not
fall, and the first seconds' latency did not move: see docs/infra.md).

`run` returns what was done, ends early when `stop` is set, and raises on an
error (the supervisor logs it; the engine still counts as ready).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from msgctl.infra import mirror as mirror_config
from msgctl.infra.security import client_engines as identity
from msgctl.infra.spec import DEFAULT_PARTITIONS
from runtime.adapters.cluster import engine_auth
from runtime.core.seqsnapshot import OFFSETS_KEY, head_key, offsets_value

TOPIC_IN, TOPIC_OUT, TOPIC_STATE = "msgctl.warmup.in", "msgctl.warmup.out", "msgctl.warmup.state"
TOPICS = (TOPIC_IN, TOPIC_OUT, TOPIC_STATE)
GROUPS = ("msgctl-warmup-seq", "msgctl-warmup-router")
KEPT = {"retention.ms": "600000"}  # what a warm-up writes is gone ten minutes later
# on every region's Kafka, copied by MirrorMaker 2 to the others as <region>.<topic>;
# kept (see the module docstring)
TOPIC_MIRROR = mirror_config.WARMUP_TOPIC
MIRROR_GROUP = "msgctl-warmup-mirror"
PARTITIONS = DEFAULT_PARTITIONS  # the default of the runtimes' topics (not a topology's)
BODY = b"x" * 200  # about a sealed 100-byte message with its envelope
TRANSACTORS = 2  # transactional producers at once
INGRESS_RATE = 400  # msgs/s into msgctl.warmup.in
IN_FLIGHT = 8  # Cassandra rounds at once (a round: see _drive_store)
CQL_ROUNDS = 30  # Cassandra rounds a second
CONVERSATIONS = 16  # in the warm-up keyspace
STATE_KEYS = 64  # keys of the compacted state topic (the conversations of a sequencer)
WRAP = 1000  # sequence numbers of a warm-up conversation go round this


def _kafka_conf(bootstrap: str, security: dict[str, Any] | None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 0,
            **engine_auth.kafka_settings(identity(security))}


def _produce_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """The runtimes' producer settings: the broker validates lz4 batches on its hot path."""
    return {**conf, "acks": "all", "compression.type": "lz4"}


def _sequencer_producer(conf: dict[str, Any], transactional_id: str) -> Any:
    """A transactional producer set up as the sequencer's (its linger as well)."""
    from confluent_kafka import Producer

    from runtime.adapters.cluster.kafka import TXN_LINGER_MS

    return Producer({**_produce_conf(conf), "linger.ms": TXN_LINGER_MS,
                     "transactional.id": transactional_id, "transaction.timeout.ms": 60000})


def _create_topics(admin: Any, timeout: float,
                   configs: dict[str, dict[str, str]] | None = None) -> None:
    """Create the topics `configs` names (topic -> its settings; by default the Kafka
    warm-up's), those that exist already left as they are."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    from runtime.adapters.cluster.kafka import SEQ_STATE_CONFIG

    if configs is None:
        configs = {TOPIC_IN: KEPT, TOPIC_OUT: KEPT,
                   TOPIC_STATE: dict(SEQ_STATE_CONFIG)}  # configured as msg.seq-state
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1, config=c)
         for t, c in configs.items()], operation_timeout=timeout)
    for future in futures.values():
        try:
            future.result(timeout)
        except Exception as exc:
            err = exc.args[0] if exc.args else None
            if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def _clean_kafka(admin: Any, timeout: float) -> None:
    """Delete the topics and groups (best effort: a leftover is harmless)."""
    futures = [*admin.delete_topics(list(TOPICS), operation_timeout=timeout).values(),
               *admin.delete_consumer_groups(list(GROUPS), request_timeout=timeout).values()]
    for future in futures:
        with contextlib.suppress(Exception):
            future.result(timeout)


def kafka(bootstrap: str, seconds: float, security: dict[str, Any] | None = None,
          stop: threading.Event | None = None, timeout: float = 20.0,
          abort: threading.Event | None = None,
          loaded: threading.Event | None = None) -> dict[str, Any]:
    """Drive one Kafka cluster for `seconds` or until `stop` (see the module docstring);
    `abort` also stops it, without deleting the topics (the broker is going away).
    `loaded` is set at the first read-process-write transaction (the group joined)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    from runtime.adapters.cluster.kafka import LINGER_MS

    conf = _kafka_conf(bootstrap, security)
    admin = AdminClient(conf)
    _create_topics(admin, timeout)
    produce_conf = _produce_conf(conf)
    ingress = Producer({**produce_conf, "enable.idempotence": True, "linger.ms": LINGER_MS})
    txn = _sequencer_producer(conf, "msgctl-warmup")
    seq = Consumer({**conf, "group.id": GROUPS[0], "isolation.level": "read_committed",
                    "enable.auto.commit": False, "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 100})
    router = Consumer({**conf, "group.id": GROUPS[1], "isolation.level": "read_committed",
                       "enable.auto.commit": True, "auto.offset.reset": "earliest",
                       "fetch.wait.max.ms": 100})
    counts = {"produced": 0, "transactions": 0, "routed": 0, "errors": 0}
    t0 = time.monotonic()
    deadline = t0 + seconds
    done = threading.Event()

    def running() -> bool:
        return time.monotonic() < deadline and not done.is_set() and not any(
            e is not None and e.is_set() for e in (stop, abort))

    def counted(body: Any) -> Any:
        """A helper thread's body: its error is counted, the others carry on."""
        def run(*args: Any) -> None:
            try:
                body(*args)
            except Exception:  # noqa: BLE001 - a warm-up's load, not the product
                counts["errors"] += 1
        return run

    def produce() -> None:  # the gateways: a steady ingress of INGRESS_RATE msgs/s
        while running():
            for _ in range(10):
                ingress.produce(TOPIC_IN, BODY, key=str(counts["produced"]).encode())
                counts["produced"] += 1
            ingress.poll(0)
            time.sleep(10 / INGRESS_RATE)
        if abort is None or not abort.is_set():
            ingress.flush(timeout)

    def route() -> None:  # the store writer and push: read_committed reads
        while running():
            counts["routed"] += sum(1 for r in router.consume(500, timeout=0.05)
                                    if not r.error())

    def commit_alone(producer: Any) -> None:  # more transactions, as busy sequencers make
        producer.init_transactions(timeout)
        n = 0
        while running():
            producer.begin_transaction()
            for i in range(10):
                producer.produce(TOPIC_OUT, BODY, partition=(n + i) % PARTITIONS)
            producer.commit_transaction(timeout)
            n += 1
            counts["transactions"] += 1

    others = [Producer({**produce_conf, "transactional.id": f"msgctl-warmup-{i}",
                        "transaction.timeout.ms": 60000}) for i in range(1, TRANSACTORS)]
    threads = [threading.Thread(target=counted(produce), daemon=True),
               threading.Thread(target=counted(route), daemon=True),
               *(threading.Thread(target=counted(commit_alone), args=(p,), daemon=True)
                 for p in others)]
    started: list[threading.Thread] = []
    try:
        txn.init_transactions(timeout)
        seq.subscribe([TOPIC_IN])
        router.subscribe([TOPIC_OUT])
        for thread in threads:
            thread.start()
            started.append(thread)
        while running():  # the sequencer: read, re-produce and commit in one transaction
            records = [r for r in seq.consume(50, timeout=0.02) if not r.error()]
            if not records:
                continue
            txn.begin_transaction()
            for r in records:
                txn.produce(TOPIC_OUT, r.value(), key=r.key(), partition=r.partition())
            # a snapshot per key and the input positions, on the compacted topic
            for key, value in snapshots([(r.key(), r.offset()) for r in records]).items():
                txn.produce(TOPIC_STATE, value, key=key)
            positions = {tp.partition: tp.offset for tp in seq.position(seq.assignment())}
            txn.produce(TOPIC_STATE, offsets_value(positions), key=OFFSETS_KEY)
            txn.commit_transaction(timeout)
            counts["transactions"] += 1
            if loaded is not None:
                loaded.set()
    finally:
        done.set()
        aborted = abort is not None and abort.is_set()
        for thread in started:
            thread.join(1.0 if aborted else timeout)
        if not aborted:  # a broker going away: nothing to clean, nobody to wait for
            try:
                for consumer in (seq, router):
                    consumer.close()
            finally:
                _clean_kafka(admin, timeout)
    return {"seconds": round(time.monotonic() - t0, 1), **counts}


def mirror(bootstrap: str, sources: dict[str, str], seconds: float,
           security: dict[str, Any] | None = None, stop: threading.Event | None = None,
           timeout: float = 20.0, loaded: threading.Event | None = None) -> dict[str, Any]:
    """Drive the MirrorMaker 2 that copies `sources` (region -> bootstrap) into the
    cluster at `bootstrap` for `seconds` or until `stop`: transactions of ten records,
    as the sequencers write `msg.events`, at INGRESS_RATE into TOPIC_MIRROR of each
    source, read back (read_committed) from their copies here. `loaded` is set when
    the first copy arrives. The topics stay (see the module docstring)."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    counts = {"produced": 0, "transactions": 0, "mirrored": 0}
    if not sources:  # a plan written before mirrors were warmed names none
        return {"seconds": 0.0, **counts}
    producers = []
    for source in sources.values():
        conf = _kafka_conf(source, security)
        _create_topics(AdminClient(conf), timeout, {TOPIC_MIRROR: KEPT})
        # one per target: a source copied to several regions is driven by the warm-up
        # of each
        producer = _sequencer_producer(conf, f"msgctl-warmup-mirror-to-{bootstrap}")
        producer.init_transactions(timeout)
        producers.append(producer)
    here = _kafka_conf(bootstrap, security)
    # made before MM2 makes them (with the broker's retention), so they get KEPT's
    _create_topics(AdminClient(here), timeout,
                   {f"{region}.{TOPIC_MIRROR}": KEPT for region in sources})
    # assigned, not subscribed: no consumer group is made, so none is left behind
    copies = Consumer({**here, "group.id": MIRROR_GROUP, "isolation.level": "read_committed",
                       "enable.auto.commit": False})
    copies.assign([TopicPartition(f"{region}.{TOPIC_MIRROR}", p, OFFSET_END)
                   for region in sources for p in range(PARTITIONS)])
    t0 = time.monotonic()
    try:
        while counts["transactions"] == 0 or (
                time.monotonic() < t0 + seconds and not (stop and stop.is_set())):
            for producer in producers:
                producer.begin_transaction()
                for i in range(10):
                    producer.produce(TOPIC_MIRROR, BODY, partition=i % PARTITIONS)
                producer.commit_transaction(timeout)
                counts["produced"] += 10
                counts["transactions"] += 1
            arrived = sum(1 for r in copies.consume(500, timeout=0) if not r.error())
            counts["mirrored"] += arrived
            if arrived and loaded is not None:
                loaded.set()
            pace = t0 + counts["produced"] / len(producers) / INGRESS_RATE
            time.sleep(max(0.0, pace - time.monotonic()))
    finally:
        copies.close()
    return {"seconds": round(time.monotonic() - t0, 1), **counts}


def snapshots(records: list[tuple[bytes | None, int | None]]) -> dict[bytes, bytes]:
    """The state records a warm-up transaction writes for its input `records` (key,
    offset): one per state key, as the sequencer writes one snapshot per conversation
    of its batch (STATE_KEYS of them, keyed and shaped as `msg.seq-state`'s)."""
    out: dict[bytes, bytes] = {}
    for key, offset in records:
        n = int(key) % STATE_KEYS if key and key.isdigit() else 0
        out[head_key(f"warmup-{n}")] = json.dumps({"head": offset or 0, "recent": []}).encode()
    return out


def store_batch(n: int, convs: list[Any], heads: dict[str, int], body: str) -> list[Any]:
    """Round `n`'s batch of messages, as the store writer gets them from one sequencer
    transaction: 1 to 4 conversations (the first is `convs[n % len]`), 1 to 3 messages
    each, every count of either within any 12 rounds in a row. `heads` (conversation ->
    last seq handed out, wrapping at WRAP) moves on."""
    from runtime.ports import Message

    msgs: list[Message] = []
    for i in range(1 + n % 4):
        conv = convs[(n + i * 5) % len(convs)]
        for _ in range(1 + (n // 4 + i) % 3):
            seq = heads[conv.conv] % WRAP + 1
            heads[conv.conv] = seq
            msgs.append(Message(conv.conv, seq, seq - 1, f"m-{conv.conv}-{seq}", f"c{seq}",
                                conv.members[0], "phone", int(time.time() * 1000), "text",
                                body))
    return msgs


def keyspace(datacenter: str) -> str:
    """The warm-up keyspace of one data center."""
    return "msgctl_warmup_" + re.sub(r"[^a-z0-9_]", "_", datacenter.lower())[:32]


def cassandra(host: str, port: int, datacenter: str, seconds: float,
              security: dict[str, Any] | None = None, stop: threading.Event | None = None,
              timeout: float = 30.0, loaded: threading.Event | None = None) -> dict[str, Any]:
    """Drive one Cassandra node for `seconds` (see the module docstring); `loaded` is
    set once the first round is done (the schema made, the statements prepared)."""
    from runtime.adapters.cluster.cassandra_store import CassandraStore

    store = CassandraStore([host], port, keyspace(datacenter or "local"),
                           local_dc=datacenter, replication={datacenter or "local": 1},
                           request_timeout=timeout, connect_timeout=timeout,
                           auth=engine_auth.cassandra_kwargs(identity(security)))
    t0 = time.monotonic()

    def running() -> bool:
        return time.monotonic() < t0 + seconds and not (stop and stop.is_set())

    async def drive() -> dict[str, Any]:
        await store.connect()
        try:
            return await _drive_store(store, running, datacenter or "local", loaded)
        finally:
            await store.close()

    out = asyncio.run(drive())
    return {"seconds": round(time.monotonic() - t0, 1), **out}


async def _drive_store(store: Any, running: Any, home: str,
                       loaded: threading.Event | None = None) -> dict[str, int]:
    """The store's own requests, CQL_ROUNDS rounds a second, IN_FLIGHT rounds at once:
    a round appends a store writer's batch (one to three messages of each of one to
    four conversations: the shapes of its requests vary as the router's do) with
    their heads, beside them where the store can put them there, reads one back and
    touches a member's cursor, watermark and push tokens, as a send and its delivery
    do; the sequence numbers wrap at WRAP, so every warm-up overwrites the same rows."""
    from runtime.core.watermarks import Watermark
    from runtime.ports import Conversation

    convs = [Conversation(f"warmup-{i}", (f"warmup-a{i}", f"warmup-b{i}"), home)
             for i in range(CONVERSATIONS)]
    for conv in convs:
        await store.create_conversation(conv)  # a lightweight transaction (Paxos)
    body = "x" * len(BODY)
    counts = {"rounds": 0, "messages": 0, "errors": 0}
    t0 = time.monotonic()

    heads = dict.fromkeys((c.conv for c in convs), 0)

    async def one(n: int) -> None:
        msgs = store_batch(n, convs, heads, body)
        conv = convs[n % CONVERSATIONS]
        sender, reader = conv.members
        base = max(0, heads[conv.conv] - 10)
        # as the store writer does: each head in its messages' own mutation (a static
        # cell) where the store can put it there, the others written apart after them.
        # Every head written apart left Cassandra's write path compiled for rows with
        # no static part, and the first real traffic threw 36 of its compiled methods
        # away (docs/infra.md)
        inline = await store.store_messages(msgs, {m.conv for m in msgs})
        if apart := [m for m in msgs if m.conv not in inline]:
            await store.set_heads(apart)
        await store.lookup_cid(conv.conv, sender, msgs[0].cid)
        await store.messages(conv.conv, max(0, base - 20), 50)
        await store.set_cursor(reader, "phone", conv.conv, base + 10)
        await store.set_watermark(reader, conv.conv, Watermark(base + 10, base + 5))
        await store.watermark(reader, conv.conv)
        await store.device_state(reader, "phone")
        await store.push_tokens(list(conv.members))
        await store.heads([c.conv for c in convs[:8]])
        await store.create_conversation(conv)  # one that exists: Paxos, not applied
        counts["rounds"] += 1
        counts["messages"] += len(msgs)
        if loaded is not None:
            loaded.set()

    n = 0
    pending: set[asyncio.Task[None]] = set()

    def count(finished: set[asyncio.Task[None]]) -> None:
        # a timeout under the startup's load costs that round, not the warm-up
        counts["errors"] += sum(1 for t in finished if t.exception() is not None)

    while n == 0 or running():  # one round at least: the schema may have taken the time
        while len(pending) >= IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            count(done)
        pending.add(asyncio.create_task(one(n)))
        n += 1
        await asyncio.sleep(max(0.0, t0 + n / CQL_ROUNDS - time.monotonic()))
    if pending and counts["rounds"] == 0:  # the one round a warm-up always does
        count((await asyncio.wait(pending, timeout=30.0))[0])
    for task in pending:  # a round takes up to ten requests: not waited for at the end
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return counts


def compiler_ticks(pid: int) -> int | None:
    """CPU ticks the JIT compiler threads of JVM `pid` used so far (None: not readable,
    or no HotSpot compiler thread there)."""
    total = 0
    found = False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if "CompilerThre" in name:  # "C2 CompilerThre", "C1 CompilerThre" (15 chars)
            found = True
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    # none: not a HotSpot JIT (or -Xint), whose quiet would mean nothing
    return total if found else None


class JitWatch:
    """Has the JIT of a JVM settled? True once its compiler threads used under QUIET of a
    core over the last WINDOW seconds, and not before MIN_SECONDS after `begin` (the
    load reached the engine: a warm-up still setting up leaves the compilers quiet
    too)."""

    QUIET = 0.10
    WINDOW = 5.0
    MIN_SECONDS = 15.0

    def __init__(self, pid: int | None, clock: Any = time.monotonic,
                 ticks: Any = compiler_ticks) -> None:
        self.pid, self.clock, self.ticks = pid, clock, ticks
        self.hz = os.sysconf("SC_CLK_TCK")
        self.start: float | None = None
        self.samples: list[tuple[float, int]] = []

    def begin(self) -> None:
        """The warm-up's load is running from now on."""
        if self.start is None:
            self.start = self.clock()

    def settled(self) -> bool:
        if self.pid is None or self.start is None:
            return False
        used = self.ticks(self.pid)
        if used is None:
            return False
        now = self.clock()
        if self.samples and used < self.samples[-1][1]:
            # a compiler thread ended (HotSpot adds and retires them) and took its
            # ticks along: count afresh from here
            self.samples.clear()
        self.samples.append((now, used))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.WINDOW:
            self.samples.pop(0)
        then, before = self.samples[0]
        if now - self.start < self.MIN_SECONDS or now - then < self.WINDOW:
            return False
        return (used - before) / self.hz / (now - then) < self.QUIET


def run(spec: dict[str, Any], seconds: float, stop: threading.Event | None = None,
        pid: int | None = None) -> dict[str, Any]:
    """Warm the engine a readiness probe spec names (kind kafka, cql or mirror; others:
    nothing) until the JIT of its JVM `pid` has settled (see `JitWatch`) or `seconds`
    ran out."""
    kind = spec.get("kind")
    if kind not in ("kafka", "cql", "mirror") or seconds <= 0:
        return {}
    done = threading.Event()
    loaded = threading.Event()  # set by the driver once its whole path has worked once
    watch = JitWatch(pid)

    def monitor() -> None:
        while not done.wait(1.0):
            if loaded.is_set():
                watch.begin()
            if (stop is not None and stop.is_set()) or watch.settled():
                done.set()

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    try:
        if kind == "kafka":
            out = kafka(spec["bootstrap"], seconds, spec.get("security"), done, abort=stop,
                        loaded=loaded)
        elif kind == "mirror":
            out = mirror(spec["bootstrap"], dict(spec.get("sources") or {}), seconds,
                         spec.get("security"), done, loaded=loaded)
        else:
            out = cassandra(spec["host"], int(spec["port"]), spec.get("datacenter") or "",
                            seconds, spec.get("security"), done, loaded=loaded)
    finally:
        settled = done.is_set() and not (stop is not None and stop.is_set())
        done.set()
        watcher.join()
    return {**out, "jit_settled": settled}
