"""A runtime process of a cluster region: one of sequencer, presence, push or gateway.

Same entry point as the embedded node (``python -m runtime.node --config``);
the config's `backend: cluster` and `runtimes` pick this composition. Each
process talks to the engines (Kafka, Cassandra, Redis) and, through them, to
the other runtimes; it serves /readyz on its port for the supervisor. A gateway
of a region with an S3 engine also serves media on its media port
(runtime.media.s3): clients POST uploads there and the gateway writes them to
S3 (no client ever writes to S3), and downloads stream from S3 through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from runtime import keyring as keyring_mod
from runtime.adapters.cluster import engine_auth, kafka
from runtime.adapters.cluster.cassandra_store import CassandraStore
from runtime.adapters.cluster.kafka import EVENTS, TYPING, AsyncProducer, ensure_topics, mirrored
from runtime.adapters.cluster.redis_bus import (
    PUSH_TOKENS,
    AnnouncedTokens,
    RedisDirectory,
    RegionsOnline,
    Subscriber,
    connect,
)
from runtime.adapters.push import build_provider
from runtime.cluster.feed import EventFeed
from runtime.cluster.gateway_link import (
    ClusterIngest,
    ClusterReceipts,
    GatewayLink,
    Ingresses,
    KafkaTypingLog,
    PresenceClient,
)
from runtime.cluster.presence_hub import PresenceHub
from runtime.cluster.presence_link import PresenceLink
from runtime.cluster.reconcile import Reconciler
from runtime.cluster.router import StoreRouter
from runtime.cluster.sequencer import KafkaSequencer
from runtime.config import NodeConfig
from runtime.conversations import Conversations
from runtime.core import media as media_rules
from runtime.gateway.server import Gateway
from runtime.health import HealthServer
from runtime.media.s3 import S3BlobStore, S3MediaServer
from runtime.media.service import MediaService
from runtime.push import push_service
from runtime.tls import scheme, server_tls

# seconds the push runtime keeps a user's push tokens; the gateways announce changes, so
# this only bounds one announcement missed
PUSH_TOKEN_TTL = 10.0

log = logging.getLogger("msgctl.node")


class ClusterNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.engines = config.engines
        kafka.configure(engine_auth.kafka_settings(self.engines))
        self.parts: dict[str, Any] = {}
        self._stops: list[Any] = []  # async callables, run in reverse on stop
        self.health: HealthServer | None = None
        self.gateway: Gateway | None = None

    def readiness(self) -> dict[str, str]:
        # a role whose part is not built yet is starting: an empty view must not read as ready
        out = {role: "starting" for role in self.config.runtimes}
        for name, part in self.parts.items():
            out[name] = "ready" if getattr(part, "ready", False) else "starting"
        return out

    async def start(self) -> None:
        roles = self.config.runtimes
        if "gateway" not in roles:
            # the supervisor probes /readyz here while the parts come up
            self.health = HealthServer(self.config.host, self.config.port, self.config.region,
                                       self.readiness)
            await self.health.start()
            self._stops.append(self.health.stop)
        for role in ("sequencer", "presence", "push", "gateway"):
            if role in roles:
                await getattr(self, f"_start_{role}")()

    async def stop(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                await stop()

    async def _store(self, create_schema: bool) -> CassandraStore:
        store = CassandraStore.from_config(self.engines, create_schema=create_schema)
        await store.connect()
        self._stops.append(store.close)
        return store

    def _redis(self, retries: int = 1) -> Any:
        return self._redis_at(self.engines.redis_url, retries)

    def _redis_at(self, url: str, retries: int = 1) -> Any:
        client = connect(url, retries=retries, **engine_auth.redis_kwargs(self.engines, url))
        self._stops.append(client.aclose)
        return client

    async def _start_sequencer(self) -> None:
        loop = asyncio.get_running_loop()
        created = await loop.run_in_executor(None, ensure_topics, self.engines.kafka_bootstrap,
                                             self.engines.partitions)
        if created:
            log.info("created topics %s", ", ".join(created))
        store = await self._store(create_schema=self.config.schema_owner)
        redis = self._redis()
        await redis.ping()
        if not self.config.region_gateways:
            # written by every `msgctl up`; without it no event would reach a device
            raise RuntimeError("the node config names none of the region's gateways "
                               "(region_gateways); write it again with 'msgctl up'")
        directory = RedisDirectory(redis, region=self.config.region,
                                   gateways=self.config.region_gateways)
        # conversations move only between regions: one region has no epochs to look up
        sequencer = KafkaSequencer(self.engines.kafka_bootstrap, self.config.region, store, store,
                                   homes=store if self.engines.peer_kafka else None,
                                   txn_interval=self.engines.txn_interval_ms / 1000)
        # the routers deliver this region's events and those of every other region
        self.parts["sequencer"] = sequencer
        await sequencer.start()
        self._stops.append(sequencer.stop)
        router = StoreRouter(self.engines.kafka_bootstrap, self.config.region, store,
                             Conversations(store), directory,
                             topics=[EVENTS, TYPING, *(mirrored(p, t)
                                                       for p in sorted(self.engines.peer_kafka)
                                                       for t in (EVENTS, TYPING))])
        self.parts["router"] = router
        await router.start()
        self._stops.append(router.stop)
        if self.engines.peer_kafka:
            # conversations moved here by a failover or a move: fence, activate, reconcile
            local = AsyncProducer(self.engines.kafka_bootstrap)
            self._stops.append(lambda: asyncio.get_running_loop().run_in_executor(
                None, local.close))
            reconciler = Reconciler(self.config.region, store, local, self.engines.peer_kafka)
            self.parts["reconciler"] = reconciler
            await reconciler.start()
            self._stops.append(reconciler.stop)
        logging.getLogger("msgctl.sequencer").info(
            "ready: kafka %s, cassandra %s/%s, redis %s", self.engines.kafka_bootstrap,
            ",".join(self.engines.cassandra_hosts), self.engines.keyspace, self.engines.redis_url)

    async def _start_presence(self) -> None:
        redis = self._redis()
        await redis.ping()
        p = self.config.presence
        peers = sorted(self.engines.peer_kafka)
        link = PresenceLink(self.engines.kafka_bootstrap, self.config.region, peers,
                            lambda region, state: hub.service.remote(region, state))
        hub = PresenceHub(redis, self._redis(retries=0), self.config.region,
                          ttl=2 * p.heartbeat_ms / 1000, grace=p.grace_ms / 1000,
                          export=link.export if peers else None)
        self.parts["presence"] = hub
        if peers:
            await link.start()
            self._stops.append(link.stop)
        await hub.start()
        self._stops.append(hub.stop)
        logging.getLogger("msgctl.presence").info("ready: redis %s", self.engines.redis_url)

    async def _start_push(self) -> None:
        store = await self._store(create_schema=False)
        redis = self._redis()
        directory = RegionsOnline(RedisDirectory(redis), {
            name: self._redis_at(url) for name, url in self.engines.peer_redis.items()})

        async def marks(user: str, conv: str) -> Any:
            return await store.watermark(user, conv)

        provider = build_provider(self.config.push, Path(self.config.data_dir),
                                  self.config.region)
        push = push_service(self.config, Conversations(store), store, directory, provider,
                            marks, token_ttl=PUSH_TOKEN_TTL)
        self.parts["push"] = push
        await push.start()
        self._stops.append(push.stop)
        # the gateways announce token changes; after a lost subscription, anything may
        # have changed meanwhile
        async def forget_all() -> None:
            push.forget_tokens()

        tokens = Subscriber(self._redis(retries=0), [PUSH_TOKENS],
                            lambda _channel, user: push.forget_tokens(user.decode()),
                            on_reconnect=forget_all)
        await tokens.start()
        self._stops.append(tokens.stop)
        feed = EventFeed(self.engines.kafka_bootstrap, f"msgctl-push-{self.config.region}",
                         push.on_event)
        await feed.start()
        self._stops.append(feed.stop)
        logging.getLogger("msgctl.push").info("ready: %s",
                                              push.provider.describe())

    async def _start_gateway(self) -> None:
        cfg = self.config
        store = await self._store(create_schema=False)
        producer = AsyncProducer(self.engines.kafka_bootstrap)
        self._stops.append(lambda: asyncio.get_running_loop().run_in_executor(
            None, producer.close))
        redis = self._redis()
        await redis.ping()
        directory = RedisDirectory(redis, cfg.gateway_id, region=cfg.region)
        await directory.start()
        self._stops.append(directory.stop)
        conversations = Conversations(store)
        ingresses = Ingresses(producer, cfg.region, self.engines.peer_kafka, conversations,
                              homes=store if self.engines.peer_kafka else None)
        self._stops.append(lambda: asyncio.get_running_loop().run_in_executor(
            None, ingresses.close))
        ingest = ClusterIngest(ingresses, store, cfg.gateway_id)
        receipts = ClusterReceipts(ingresses, store, ingest)
        self._stops.append(receipts.flush)
        presence = PresenceClient(redis, cfg.region, cfg.gateway_id,
                                  cfg.presence.heartbeat_ms / 1000)
        await presence.start()
        self._stops.append(presence.stop)
        media = await self._start_media()
        # push runtimes keep users' tokens: each change is announced in every region
        state = AnnouncedTokens(store, {cfg.region: redis} | {
            name: self._redis_at(url) for name, url in self.engines.peer_redis.items()})
        gateway = Gateway(cfg, store=store, state=state, conversations=conversations,
                          ingest=ingest, receipts=receipts, events=KafkaTypingLog(producer),
                          directory=directory, presence=presence,
                          readiness=self.readiness, media=media)
        self.gateway = gateway
        # subscriptions get a client that does not retry quietly: a lost link must be
        # seen, so the gateway can catch up on what was published while it was down
        link = GatewayLink(self._redis(retries=0), cfg.region, cfg.gateway_id, ingest,
                           presence, directory, gateway.deliver, gateway.notify_presence,
                           gateway.catch_up_all)
        await link.start()
        self._stops.append(link.stop)
        self.parts["gateway"] = gateway
        await gateway.start()
        self._stops.append(gateway.stop)
        logging.getLogger("msgctl.gateway").info(
            "listening on %s://%s:%d/v1/ws as %s", scheme(cfg, "ws"), cfg.host, cfg.port,
            cfg.gateway_id)

    async def _start_media(self) -> MediaService | None:
        """Media on S3 when the region has an s3 engine (else `upload` answers unavailable)."""
        cfg = self.config
        if not (cfg.media.enabled and cfg.media.port and self.engines.s3_endpoint):
            return None
        secret = media_rules.derive_secret(cfg.secret)
        # files being received wait on disk, per gateway process, before their PUT to S3
        blobs = S3BlobStore.from_config(self.engines, secret,
                                        Path(cfg.data_dir) / f"media-tmp-{cfg.gateway_id}")
        await blobs.ensure_bucket()
        server = S3MediaServer(blobs, cfg.host, cfg.media.port)
        server.tls = server_tls(cfg)
        if cfg.keyring:  # blobs sealed at rest like bodies
            server.keyring = keyring_mod.shared(cfg.keyring)
        try:
            await server.start()
        except OSError as exc:
            raise OSError(exc.errno, f"media endpoint port {cfg.media.port}: "
                          f"{exc.strerror}") from exc
        self._stops.append(server.stop)
        logging.getLogger("msgctl.media").info("ready: s3 %s bucket %s, downloads on :%d",
                                               self.engines.s3_endpoint, blobs.bucket,
                                               cfg.media.port)
        return MediaService(cfg.media, secret, blobs, cfg.media.port,
                            max_slots=cfg.limits.max_upload_slots_per_user,
                            secure=server.tls is not None)
