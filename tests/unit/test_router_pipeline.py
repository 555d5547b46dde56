"""The store writer's pipeline (runtime.cluster.router): batches read ahead are stored at
once, but no head lands before an earlier batch's messages are stored, events are routed
in the order read and only after they are stored, and offsets are stored for the next
commit only after their batch is routed. A store that fails is retried in order.

A scripted consumer stands in for Kafka and a recording store for Cassandra; the
router, its envelopes and its order rules are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection
from typing import Any

from confluent_kafka import TopicPartition

from runtime.adapters.cluster import envelopes as env
from runtime.adapters.cluster.cassandra_store import StoreUnavailable
from runtime.cluster import router as router_module
from runtime.cluster.router import StoreRouter, next_offsets
from runtime.conversations import Conversations
from runtime.ports import Conversation, Message


class Record:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._p, self._o, self._v = partition, offset, value

    def topic(self) -> str:
        return "msg.events"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def error(self) -> None:
        return None


class ScriptedConsumer:
    """Hands out one scripted batch per poll (first record) + consume (the rest)."""

    def __init__(self, batches: list[list[Record]],
                 hold: tuple[int, threading.Event] | None = None) -> None:
        self.batches = batches
        self.hold = hold  # (n, event): the n-th batch is handed out once event is set
        self.given = 0
        self.current: list[Record] = []
        self.stored: list[list[tuple[int, int]]] = []
        self.lock = threading.Lock()

    def poll(self, timeout: float) -> Record | None:
        with self.lock:
            held = self.hold is not None and self.given == self.hold[0] and \
                not self.hold[1].is_set()
            if self.batches and not held:
                self.given += 1
                self.current = self.batches.pop(0)
                return self.current.pop(0)
        time.sleep(min(timeout, 0.01))
        return None

    def consume(self, n: int, timeout: float) -> list[Record]:
        with self.lock:
            out, self.current = self.current[:n], self.current[n:]
            return out

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.append(sorted((tp.partition, tp.offset) for tp in offsets))

    def close(self) -> None:
        pass


class RecordingStore:
    """Message writes wait for their conversation's gate; every step is logged."""

    def __init__(self) -> None:
        self.log: list[tuple[str, tuple[int, ...]]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.fail_once: set[str] = set()
        self.hang_once: set[str] = set()  # the first write of these never returns
        self.heads_gates: dict[str, asyncio.Event] = {}  # a separate heads write waits
        self.upserts: list[tuple[int, ...]] = []  # written again by the in-order pass

    async def store_messages(self, messages: list[Message],
                             heads: Collection[str] = ()) -> set[str]:
        """Logs the messages, then ("beside", seqs) for the heads it wrote with them: as
        the real store, each conversation asked for that is past its first message (no
        bucket rule here)."""
        conv = messages[0].conv
        if conv in self.gates:
            await self.gates[conv].wait()
        if conv in self.fail_once:
            self.fail_once.discard(conv)
            raise StoreUnavailable("cassandra away")
        if conv in self.hang_once:
            self.hang_once.discard(conv)
            await asyncio.Event().wait()
        self.log.append(("messages", tuple(m.seq for m in messages)))
        beside = {m.conv for m in messages if m.prev > 0} & set(heads)
        beside -= {m.conv for m in messages if m.prev == 0}
        if beside:
            self.log.append(("beside", tuple(m.seq for m in messages if m.conv in beside)))
        return beside

    async def set_heads(self, messages: list[Message]) -> None:
        conv = messages[0].conv
        if conv in self.heads_gates:
            await self.heads_gates[conv].wait()
        self.log.append(("heads", tuple(m.seq for m in messages)))

    async def message(self, conv: str, seq: int) -> Message:
        """The stored original of a duplicate (as `msg` makes it)."""
        return Message(conv, seq, seq - 1, f"m{seq}", f"c{seq}", "alice", "phone", 0,
                       "text", "hi")

    async def upsert_messages(self, messages: list[Message]) -> None:
        self.upserts.append(tuple(m.seq for m in messages))
        await self.store_messages(messages)
        await self.set_heads(messages)


class ConvStore:
    async def get_conversation(self, conv: str) -> Conversation:
        return Conversation(conv, ("alice", "bob"), "local")


class Pipeline:
    def __init__(self, log: list[tuple[str, tuple[int, ...]]]) -> None:
        self.log = log
        self.payloads: list[bytes] = []

    def publish(self, channel: str, payload: bytes) -> None:
        self.payloads.append(payload)

    async def execute(self) -> None:
        for payload in self.payloads:
            batch = env.EventsBatch.decode(payload)
            self.log.append(("route", tuple(
                e.event.message.seq if isinstance(e.event, env.MessageRecord)
                else -e.event.original.seq for e in batch.items)))  # a duplicate: -seq


class Directory:
    def __init__(self, log: list[tuple[str, tuple[int, ...]]]) -> None:
        self.redis = self
        self.log = log

    def pipeline(self, transaction: bool = False) -> Pipeline:
        return Pipeline(self.log)

    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]:
        return {"gw-1": users}


def msg(conv: str, seq: int) -> bytes:
    return env.message_event(Message(conv, seq, seq - 1, f"m{seq}", f"c{seq}", "alice",
                                     "phone", int(time.time() * 1000), "text", "hi"), "gw-1")


def router(store: RecordingStore, consumer: ScriptedConsumer) -> StoreRouter:
    r = StoreRouter("unused:9092", "local", store,  # type: ignore[arg-type]
                    Conversations(ConvStore()),  # type: ignore[arg-type]
                    Directory(store.log))  # type: ignore[arg-type]
    r.consumer = consumer  # type: ignore[assignment]
    return r


async def run_until(r: StoreRouter, done: Any, timeout: float = 5.0) -> None:
    task = asyncio.create_task(r._loop())
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the router did not get there"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        r.worker.close()


def test_a_slow_batch_holds_later_routes_but_not_their_messages_or_own_heads() -> None:
    async def go() -> None:
        store = RecordingStore()
        store.gates["slow"] = asyncio.Event()
        consumer = ScriptedConsumer([[Record(0, 10, msg("slow", 1))],
                                     [Record(1, 20, msg("fast", 5)),
                                      Record(1, 21, msg("fast", 6))]])
        r = router(store, consumer)
        # offsets are stored on the consumer's worker thread, after the routing
        task = asyncio.create_task(run_until(r, lambda: (1, 22) in {
            tp for stored in list(consumer.stored) for tp in stored}))
        # the second batch's messages are written while the first one's are held...
        for _ in range(200):
            if ("messages", (5, 6)) in store.log:
                break
            await asyncio.sleep(0.01)
        # ...with its head beside them (no earlier batch of "fast" is being written)...
        assert store.log == [("messages", (5, 6)), ("beside", (5, 6))]
        # ...but its routing and every offset wait for the first batch
        await asyncio.sleep(0.1)
        assert store.log == [("messages", (5, 6)), ("beside", (5, 6))]
        assert consumer.stored == []
        store.gates["slow"].set()
        await task
        routes = [e for e in store.log if e[0] == "route"]
        assert routes in ([("route", (1,)), ("route", (5, 6))], [("route", (1, 5, 6))])
        # slow's first message has its head as a second write, before its routing
        assert store.log.index(("messages", (1,))) < store.log.index(("heads", (1,))) < \
            store.log.index(routes[0])
        assert ("heads", (5, 6)) not in store.log
        # offsets past both batches, in order, after their routing
        assert sorted({tp for stored in consumer.stored for tp in stored}) == \
            [(0, 11), (1, 22)]
        assert consumer.stored[0][0] == (0, 11)

    asyncio.run(go())


def test_a_failed_store_is_written_again_in_order_before_anything_after_it_is_routed(
) -> None:
    async def go() -> None:
        store = RecordingStore()
        store.fail_once.add("a")
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 1))],
                                     [Record(0, 1, msg("b", 5))]])
        r = router(store, consumer)
        await run_until(r, lambda: consumer.stored and consumer.stored[-1] == [(0, 2)])
        log = store.log

        def first(kind: str, seq: int) -> int:
            return next(i for i, (k, seqs) in enumerate(log) if k == kind and seq in seqs)

        # a is written again (by the in-order pass, its head after it) before anything
        # is routed; b (another conversation) has its head beside its messages
        assert first("messages", 1) < first("heads", 1) < first("route", 1)
        assert first("route", 1) <= first("route", 5)
        assert first("beside", 5) < first("route", 5)

    asyncio.run(go())


def test_after_a_failed_store_later_batches_are_stored_ahead_again() -> None:
    async def go() -> None:
        store = RecordingStore()
        store.fail_once.add("a")
        later = threading.Event()
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 1))],
                                     [Record(0, 1, msg("b", 5))],
                                     [Record(0, 2, msg("d", 9))]], hold=(2, later))
        r = router(store, consumer)

        def a_written_again() -> bool:
            if store.upserts:
                later.set()  # d is read only after the in-order pass wrote a again
            return bool(consumer.stored) and consumer.stored[-1] == [(0, 3)]

        await run_until(r, a_written_again)
        assert store.upserts and all(9 not in seqs for seqs in store.upserts)
        assert ("messages", (9,)) in store.log and ("beside", (9,)) in store.log

    asyncio.run(go())


def test_a_head_waits_for_an_earlier_batch_of_its_conversation_still_being_stored(
) -> None:
    """Only a conversation with no earlier batch still being written has its head put
    beside its messages; the others' heads are written after that batch is stored."""
    async def go() -> None:
        store = RecordingStore()
        store.gates["a"] = asyncio.Event()
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 1))],
                                     [Record(0, 1, msg("b", 7)), Record(0, 2, msg("a", 2))]])
        r = router(store, consumer)
        task = asyncio.create_task(run_until(r, lambda: consumer.stored and
                                             consumer.stored[-1] == [(0, 3)]))
        for _ in range(200):
            if ("messages", (7, 2)) in store.log:
                break
            await asyncio.sleep(0.01)
        # the second batch is stored while the first is held: b's head beside it, a's not
        assert store.log == [("messages", (7, 2)), ("beside", (7,))]
        await asyncio.sleep(0.1)
        assert not [e for e in store.log if e[0] == "heads"]
        store.gates["a"].set()
        await task
        log = store.log
        # a's head (2) only after a's first message is stored, and before 2 is routed
        assert log.index(("messages", (1,))) < log.index(("heads", (2,))) < \
            next(i for i, e in enumerate(log) if e[0] == "route" and 2 in e[1])
        assert ("heads", (1,)) in log  # a's first message: always a second write

    asyncio.run(go())


def test_a_head_beside_its_messages_while_an_earlier_heads_write_is_pending() -> None:
    """The earlier batch's messages are stored, its separate heads write is not done:
    the next batch of the conversation may put its head beside its messages (readers
    find it once conv_heads lands), but it is routed only after that write."""
    async def go() -> None:
        store = RecordingStore()
        store.heads_gates["a"] = asyncio.Event()
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 1))], [Record(0, 1, msg("a", 2))]])
        r = router(store, consumer)
        task = asyncio.create_task(run_until(r, lambda: consumer.stored and
                                             consumer.stored[-1] == [(0, 2)]))
        for _ in range(200):
            if ("beside", (2,)) in store.log:
                break
            await asyncio.sleep(0.01)
        assert store.log == [("messages", (1,)), ("messages", (2,)), ("beside", (2,))]
        await asyncio.sleep(0.1)
        assert not [e for e in store.log if e[0] == "route"]
        store.heads_gates["a"].set()
        await task
        log = store.log
        assert log.index(("heads", (1,))) < \
            min(i for i, e in enumerate(log) if e[0] == "route")

    asyncio.run(go())


def test_a_conversation_whose_batch_failed_gets_heads_beside_again_once_rewritten() -> None:
    """A failed batch holds its conversations' heads to second writes only until the
    in-order pass has written it again."""
    async def go() -> None:
        store = RecordingStore()
        store.fail_once.add("a")
        later = threading.Event()
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 5))], [Record(0, 1, msg("a", 6))]],
                                    hold=(1, later))

        def rewritten() -> bool:
            if consumer.stored and consumer.stored[-1] == [(0, 1)]:
                later.set()  # the second batch is read once the first is routed
            return bool(consumer.stored) and consumer.stored[-1] == [(0, 2)]

        await run_until(router(store, consumer), rewritten)
        assert store.upserts == [(5,)]
        assert ("heads", (5,)) in store.log  # the retry writes its head after it
        assert ("beside", (6,)) in store.log and ("heads", (6,)) not in store.log

    asyncio.run(go())


def test_a_batch_of_only_duplicates_after_a_failed_store_does_not_hold_the_next() -> None:
    """A failed batch, then one without messages (a sender's retries answered as
    duplicates, as while Cassandra restarts), then a batch with messages, the last two
    routed in one round: the third waits for the in-order pass to finish the failed
    batch, not the duplicates' batch of its own round (which never finished: the
    router stopped for good)."""
    async def go() -> None:
        store = RecordingStore()
        store.gates["a"] = asyncio.Event()
        store.fail_once.add("a")
        later = threading.Event()
        dup = env.duplicate_event("a", "alice", "c1", 1, 0, "gw-1")
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 1))], [Record(0, 1, dup)],
                                     [Record(0, 2, msg("b", 5))]], hold=(1, later))
        r = router(store, consumer)
        task = asyncio.create_task(run_until(r, lambda: consumer.stored and
                                             consumer.stored[-1] == [(0, 3)]))
        await asyncio.sleep(0.1)  # the in-order pass waits for the first batch alone
        later.set()
        for _ in range(200):  # the two others are read and b's messages stored
            if ("messages", (5,)) in store.log:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        store.gates["a"].set()  # the first batch's store fails now
        await task
        log = store.log
        assert store.upserts == [(1,)]
        routes = [e for e in log if e[0] == "route"]
        assert routes in ([("route", (1,)), ("route", (-1, 5))],
                          [("route", (1,)), ("route", (-1,)), ("route", (5,))])
        assert log.index(("heads", (1,))) < log.index(routes[0])

    asyncio.run(go())


def test_a_stored_batch_is_routed_without_waiting_for_a_later_batchs_store() -> None:
    """Batches routed in order, but the oldest waiting goes once it is stored: a later
    batch still being stored joins its round only if done by then (it held the earlier
    batch's messages for its own write)."""
    async def go() -> None:
        store = RecordingStore()
        store.gates["z"] = asyncio.Event()
        store.gates["b"] = asyncio.Event()
        consumer = ScriptedConsumer([[Record(0, 0, msg("z", 1))], [Record(0, 1, msg("a", 5))],
                                     [Record(0, 2, msg("b", 9))]])
        r = router(store, consumer)
        task = asyncio.create_task(run_until(r, lambda: consumer.stored and
                                             consumer.stored[-1] == [(0, 3)]))
        for _ in range(200):  # all three read; a's messages stored, z's and b's held
            if ("messages", (5,)) in store.log and consumer.given == 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        store.gates["z"].set()
        def routed() -> list[int]:
            return [seq for kind, seqs in store.log if kind == "route" for seq in seqs]

        for _ in range(200):  # its offsets are stored on the worker thread, after it
            if 5 in routed() and consumer.stored:
                break
            await asyncio.sleep(0.01)
        # a is routed (after z, or with it) while b's store is still held
        assert routed() == [1, 5]
        assert consumer.stored[-1] == [(0, 2)]
        store.gates["b"].set()
        await task
        assert routed() == [1, 5, 9]

    asyncio.run(go())


def test_a_store_read_ahead_that_never_ends_is_written_again_in_order(
        monkeypatch: Any) -> None:
    """The in-order pass bounds its wait for a batch's store: past it the batch is
    written again, and routed, rather than the router stopping for good."""
    monkeypatch.setattr(router_module, "STORE_WAIT", 0.3)

    async def go() -> None:
        store = RecordingStore()
        store.hang_once.add("a")
        consumer = ScriptedConsumer([[Record(0, 0, msg("a", 1))]])
        await run_until(router(store, consumer), lambda: consumer.stored == [[(0, 1)]])
        assert store.upserts == [(1,)]
        assert store.log == [("messages", (1,)), ("heads", (1,)), ("route", (1,))]

    asyncio.run(go())


def test_next_offsets_is_past_the_last_record_of_each_partition() -> None:
    records = [Record(0, 5, b""), Record(1, 2, b""), Record(0, 7, b""), Record(0, 6, b"")]
    assert sorted((tp.partition, tp.offset) for tp in next_offsets(records)) == \
        [(0, 8), (1, 3)]  # type: ignore[arg-type]
