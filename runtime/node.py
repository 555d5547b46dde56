"""A region node: the runtimes of one region in one process, on the embedded backends.

Started by the msgctl supervisor as ``python -m runtime.node --config FILE``.
It hosts the gateway, sequencer, presence and push runtimes, reports each
one's readiness on ``/readyz``, writes one JSON log file per runtime, and
stops gracefully on SIGTERM (stop accepting, close sessions with 1001, drain
the store's writer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from runtime import gcpauses, heap, lean
from runtime import keyring as keyring_mod
from runtime.adapters.embedded.memory import EmbeddedEventLog, MemoryDirectory
from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.adapters.push import build_provider
from runtime.config import NodeConfig
from runtime.conversations import Conversations
from runtime.core import media as media_rules
from runtime.core.presence import PresenceState
from runtime.gateway.server import Gateway
from runtime.media.endpoint import BlobServer
from runtime.media.service import MediaService
from runtime.media.store import LocalBlobStore
from runtime.ports import Event
from runtime.presence import PresenceService
from runtime.push import push_service
from runtime.redact import RedactFilter
from runtime.sequencer import Ingest, Receipts, Router
from runtime.tls import scheme, server_tls

LOGGERS = {
    "gateway": ["msgctl.gateway", "websockets", "msgctl.directory", "msgctl.media"],
    "sequencer": ["msgctl.sequencer", "msgctl.store", "msgctl.eventlog", "msgctl.router",
                  "msgctl.cassandra"],
    "presence": ["msgctl.presence"],
    "push": ["msgctl.push"],
}


class JsonFormatter(logging.Formatter):
    def __init__(self, runtime: str, region: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.region = region

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "runtime": self.runtime, "region": self.region, "logger": record.name,
               "msg": record.getMessage()}
        # the traceback as the handler's RedactFilter left it (redacted), as
        # logging.Formatter does: exc_text caches it
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out)


def setup_logging(config: NodeConfig) -> None:
    log_dir = Path(config.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for runtime, names in LOGGERS.items():
        if runtime not in config.runtimes:
            continue
        # two gateway processes of a region each keep their own file
        name = config.gateway_id if runtime == "gateway" else runtime
        handler = logging.FileHandler(log_dir / f"{name}.{config.region}.log")
        handler.setFormatter(JsonFormatter(runtime, config.region))
        handler.addFilter(RedactFilter())  # no JWT, push token or body in a log file
        for name in names:
            lg = logging.getLogger(name)
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)
            lg.propagate = False
    logging.getLogger("websockets").setLevel(logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(JsonFormatter("node", config.region))
    stderr.addFilter(RedactFilter())  # stderr goes to logs/<program>.log
    root.addHandler(stderr)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        data = Path(config.data_dir)
        self.store = SqliteStore(data / f"{config.region}.db")
        self.event_log = EmbeddedEventLog(self.store)
        self.directory = MemoryDirectory()
        self.conversations = Conversations(self.store)
        self.ingest = Ingest(self.event_log, self.store)
        self.receipts = Receipts(self.ingest, self.store, self.event_log)
        self.presence = PresenceService(
            self._notify_presence, ttl=2 * config.presence.heartbeat_ms / 1000,
            grace=config.presence.grace_ms / 1000)
        self.push = push_service(config, self.conversations, self.store, self.directory,
                                 build_provider(config.push, data, config.region),
                                 self.receipts.marks)
        self.blobs: BlobServer | None = None
        media: MediaService | None = None
        if config.media.enabled and config.media.port:
            secret = media_rules.derive_secret(config.secret)
            blob_store = LocalBlobStore(data / "blobs", secret, config.region)
            self.blobs = BlobServer(blob_store, config.host, config.media.port)
            self.blobs.tls = server_tls(config)
            if config.keyring:  # blobs sealed at rest like bodies
                self.blobs.keyring = keyring_mod.shared(config.keyring)
            media = MediaService(config.media, secret, blob_store, config.media.port,
                                 max_slots=config.limits.max_upload_slots_per_user,
                                 secure=self.blobs.tls is not None)
        self.gateway = Gateway(config, store=self.store, state=self.store,
                               conversations=self.conversations, ingest=self.ingest,
                               receipts=self.receipts, events=self.event_log,
                               directory=self.directory, presence=self.presence,
                               readiness=self.readiness, media=media)
        self.router = Router(self.conversations, self.directory, self._dispatch)
        self.event_log.subscribe(self.router.on_event)
        self.event_log.subscribe(self.push.on_event)
        self.started = time.time()

    def _dispatch(self, gateway: str, event: Event, users: list[str]) -> None:
        if gateway == self.config.gateway_id:
            self.gateway.deliver(event, users)

    def _notify_presence(self, watchers: frozenset[str], state: PresenceState) -> None:
        self.gateway.notify_presence(watchers, state)

    def readiness(self) -> dict[str, str]:
        parts = {"sequencer": self.ingest.ready, "presence": self.presence.ready,
                 "push": self.push.ready, "gateway": self.gateway.ready}
        return {k: "ready" if v else "starting" for k, v in parts.items()}

    async def start(self) -> None:
        # dependency order: the sequencer before anything that sends to it
        await self.ingest.start()
        await self.router.start()
        await self.presence.start()
        await self.push.start()
        if self.blobs is not None:
            try:
                await self.blobs.start()
            except OSError as exc:
                raise OSError(exc.errno, f"media endpoint port {self.blobs.port}: "
                              f"{exc.strerror}") from exc
        await self.gateway.start()
        logging.getLogger("msgctl.sequencer").info("ready: store %s", self.store.path)
        logging.getLogger("msgctl.presence").info(
            "ready: heartbeat %d ms, grace %d ms", self.config.presence.heartbeat_ms,
            self.config.presence.grace_ms)
        logging.getLogger("msgctl.push").info("ready: %s",
                                              self.push.provider.describe())
        logging.getLogger("msgctl.gateway").info(
            "listening on %s://%s:%d/v1/ws", scheme(self.config, "ws"), self.config.host,
            self.config.port)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.gateway.stop()
        if self.blobs is not None:
            with contextlib.suppress(Exception):
                await self.blobs.stop()
        await self.push.stop()
        await self.presence.stop()
        await self.router.stop()
        await self.receipts.flush()  # cursors and watermarks still waiting for their flush
        await self.ingest.stop()
        await self.store.close()


async def run_cluster(config: NodeConfig) -> int:
    from runtime.cluster_node import ClusterNode

    node = ClusterNode(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = asyncio.create_task(node.start())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({started, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():  # asked to stop while still starting
        started.cancel()
        await asyncio.gather(started, return_exceptions=True)
        await node.stop()
        return 0
    waiter.cancel()
    exc = started.exception()
    if exc is not None:
        # an engine is not there (yet): one line, and the supervisor retries with backoff
        what = ", ".join(config.runtimes)
        logging.getLogger(f"msgctl.{config.runtimes[0]}").error("cannot start %s: %s", what,
                                                               exc)
        print(f"cannot start {what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        await node.stop()
        return 2
    await stop.wait()
    logging.getLogger(f"msgctl.{config.runtimes[0]}").info("stopping")
    await node.stop()
    return 0


async def run(config: NodeConfig) -> int:
    # every runtime process, of either family, gives its free heap pages back
    trimming = heap.start()
    try:
        return await (run_cluster(config) if config.backend == "cluster"
                      else run_embedded(config))
    finally:
        if trimming is not None:
            trimming.cancel()


async def run_embedded(config: NodeConfig) -> int:
    try:
        node = Node(config)
    except (sqlite3.Error, OSError) as exc:
        logging.getLogger("msgctl.sequencer").error("cannot open the store in %s: %s",
                                                    config.data_dir, exc)
        print(f"cannot open the store in {config.data_dir}: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except OSError as exc:
        logging.getLogger("msgctl.gateway").error("cannot listen on %s:%d: %s", config.host,
                                                  config.port, exc)
        print(f"cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        await node.stop()
        return 2
    await stop.wait()
    logging.getLogger("msgctl.gateway").info("stopping")
    await node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime.node", description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    lean.skip_numpy()
    # the store, blobs, push files and logs hold messages: the user's alone, even for a
    # node started by hand (the supervisor starts it under this umask already)
    os.umask(0o077)
    config = NodeConfig.load(args.config)
    setup_logging(config)
    # tens of thousands of long-lived connection objects make the default collector
    # rescan them all often (seconds-long pauses while 18,000 clients connect); ten times
    # as often as this paused the cluster's runtimes longer in all (docs/cluster.md)
    gc.set_threshold(100_000, 50, 1_000)
    gcpauses.watch()
    if os.environ.get("MSGCTL_NO_UVLOOP"):
        return asyncio.run(run(config))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(run(config))
    return uvloop.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
