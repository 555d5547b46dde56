"""The bench driver's receivers may sit on another gateway than its senders
(`benchmarks/regions.py --rate`: senders in us-east, receivers in eu-west), and ack
every N messages (`msgctl bench --ack-every`)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future
from typing import Any

import pytest

from msgctl.bench import driver, runner


class Recorder:
    """A process pool that runs nothing: it keeps what each worker would be given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future[dict[str, Any]]:
        self.calls.append((fn, *args))
        done: Future[dict[str, Any]] = Future()
        done.set_result({"latencies_ms": [5.0], "sent_latencies_ms": [4.0],
                         "offered_in_window": 1, "delivered_in_window": 1,
                         "counts": {"errors": 0, "disorder": 0},
                         "cpu_seconds": 0.25, "traffic_s": 2.0})
        return done


@pytest.mark.parametrize(("receiver_url", "expected"), [
    ("wss://127.0.0.2:7400/v1/ws", "wss://127.0.0.2:7400/v1/ws"),
    ("", "wss://127.0.0.1:7400/v1/ws"),  # unset: the senders' gateway
])
def test_each_worker_gets_the_receivers_gateway(monkeypatch: pytest.MonkeyPatch,
                                                receiver_url: str, expected: str) -> None:
    pool = Recorder()
    monkeypatch.setattr(runner, "_pool", lambda _workers: pool)
    target = runner.Target("wss://127.0.0.1:7400/v1/ws", "", 0, "s" * 32,
                           receiver_url=receiver_url)
    settings = runner.Settings.quick()
    step = runner.run_step(target, settings, 20.0, relay=False, duration=1.0)
    assert pool.calls and step.delivered == len(pool.calls)
    # every worker's CPU over the time they sent: 0.25 s of 2 s each
    assert step.client_cpu_percent == round(100 * 0.25 * len(pool.calls) / 2.0, 1)
    for fn, url, *_rest, receivers, ack_every in pool.calls:
        assert fn is driver.traffic_worker
        assert url == "wss://127.0.0.1:7400/v1/ws" and receivers == expected
        assert ack_every == driver.ACK_EVERY


class FakeReceiver:
    """Hands out `n` msg frames of one conversation; keeps what the receiver sends."""

    def __init__(self, n: int) -> None:
        self.frames = [driver.encode({"t": "msg", "conv": "c", "seq": i + 1, "prev": i,
                                      "body": "0"}) for i in range(n)]
        self.sent: list[dict[str, Any]] = []

    def __aiter__(self) -> FakeReceiver:
        return self

    async def __anext__(self) -> str:
        if not self.frames:
            raise StopAsyncIteration
        return self.frames.pop(0)

    async def send(self, raw: str) -> None:
        self.sent.append(driver.decode(raw))


@pytest.mark.parametrize(("ack_every", "acked"), [(1, [1, 2, 3, 4, 5, 6, 7]), (3, [3, 6])])
def test_receivers_ack_every_n_messages(ack_every: int, acked: list[int]) -> None:
    ws = FakeReceiver(7)
    pair = driver.Pair("c", "s", "r", "bob")
    counts = {"delivered": 0, "disorder": 0, "closed": 0}
    asyncio.run(driver._receiver(ws, pair, [], counts, (0.0, 0.0),  # type: ignore[arg-type]
                                 ack_every))
    assert counts["delivered"] == 7
    assert [f["seq"] for f in ws.sent] == acked and all(f["t"] == "ack" for f in ws.sent)


def test_spawned_workers_keep_the_callers_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/somewhere/else.pem")  # as a re-imported script
    monkeypatch.setattr(os, "sched_setaffinity", lambda *_a: None)
    runner._start_worker("/the/callers/ca.pem")
    assert os.environ["SSL_CERT_FILE"] == "/the/callers/ca.pem"
