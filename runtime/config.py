"""Configuration of one region node, written by msgctl as JSON and read at start."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LimitsConfig:
    max_frame_bytes: int = 64 * 1024  # soft: `too_large`, connection kept
    hard_frame_bytes: int = 1024 * 1024  # hard: the connection is closed (1009)
    max_body_bytes: int = 16 * 1024
    rate_per_second: float = 200.0
    rate_burst: int = 400
    max_strikes: int = 50
    rate_bytes_per_second: int = 1024 * 1024  # received bytes, next to the frame rate
    rate_burst_bytes: int = 4 * 1024 * 1024
    send_queue_bytes: int = 4 * 1024 * 1024  # queued for one connection before it counts as slow
    inflight_sends: int = 256
    handshake_timeout_s: float = 10.0  # a client that never finishes the upgrade is dropped
    max_connections_per_user: int = 20  # per gateway process
    max_connections_per_address: int = 20_000  # per gateway process (NATs, load generators)
    max_conversations_per_user: int = 10_000  # a create is refused for a member at the cap
    max_upload_slots_per_user: int = 20  # upload slots granted and not yet expired
    rest_rate_per_second: float = 50.0  # REST requests per user (per gateway process)
    rest_rate_burst: int = 100


@dataclass
class PresenceConfig:
    heartbeat_ms: int = 30_000
    grace_ms: int = 3_000


@dataclass
class MediaConfig:
    """Uploads and downloads (docs/protocol.md `upload`); the topology's `media:` section.

    Empty `max_bytes` / `content_types` entries keep the defaults of
    runtime.core.media for that kind; `port` 0 means the gateway port + 20.
    """

    enabled: bool = True
    port: int = 0  # the blob endpoint (embedded): POST /v1/blobs, GET /v1/media/<key>
    public_url: str = ""  # a CDN / proxy base URL; "" = http://<host the client reached>:port
    max_bytes: dict[str, int] = field(default_factory=dict)  # kind -> ceiling in bytes
    content_types: dict[str, list[str]] = field(default_factory=dict)  # kind -> allow-list
    upload_ttl_s: int = 900  # presigned POST lifetime
    url_ttl_s: int = 7 * 86400  # download URL lifetime


@dataclass
class FcmConfig:
    """FCM HTTP v1: a service account JSON file; the endpoints only change for stand-ins."""

    service_account: str = ""  # path to the service account JSON (empty: FCM not configured)
    base_url: str = "https://fcm.googleapis.com"
    token_uri: str = ""  # default: the service account's token_uri


@dataclass
class ApnsConfig:
    """APNs over HTTP/2 with a token-based (.p8, ES256) provider key."""

    key_file: str = ""  # path to the AuthKey_<key id>.p8 (empty: APNs not configured)
    key_id: str = ""
    team_id: str = ""
    topic: str = ""  # the app's bundle id
    host: str = "https://api.push.apple.com"  # sandbox: https://api.sandbox.push.apple.com


@dataclass
class PushConfig:
    """Push providers (issue: push): owned by the push work.

    A platform whose provider is not configured goes to the log sink
    (<data>/push-<region>.jsonl), as does everything when neither is.
    """

    hide_body: bool = False
    max_attempts: int = 5  # then a dead-letter record (<data>/push-deadletter-<region>.jsonl)
    backoff_ms: int = 200  # first retry; doubles each attempt, with jitter
    backoff_max_ms: int = 30_000  # also caps a provider's Retry-After
    timeout_s: float = 10.0
    concurrency: int = 8  # notifications sent at once (one per device at a time)
    fcm: FcmConfig = field(default_factory=FcmConfig)
    apns: ApnsConfig = field(default_factory=ApnsConfig)

    def __post_init__(self) -> None:
        if isinstance(self.fcm, dict):
            self.fcm = FcmConfig(**self.fcm)
        if isinstance(self.apns, dict):
            self.apns = ApnsConfig(**self.apns)


# A sequencer transaction costs the broker, the router and the store writer about the same
# whatever it holds, and at a few hundred msgs/s nearly every one held a single send. One
# warm region at 200 msgs/s over 200 conversations: 8 ms between starts took the
# transactions from 205-207 to 109-128 a second and the region's CPU from 99-107% to
# 70-87% of a core, for a send -> deliver p50 of 10-15 ms instead of 8-9.
DEFAULT_TXN_INTERVAL_MS = 8


@dataclass
class EnginesConfig:
    """Where the cluster backends are (backend "cluster" only)."""

    kafka_bootstrap: str = ""  # host:port[,host:port]
    cassandra_hosts: list[str] = field(default_factory=list)
    cassandra_port: int = 9042
    cassandra_dc: str = ""  # the local data center (LOCAL_QUORUM is counted in it)
    keyspace: str = "msgctl"
    replication: dict[str, int] = field(default_factory=dict)  # data center -> replicas
    redis_url: str = ""  # redis://host:port/db
    partitions: int = 1  # of the topics it creates (topology: engines.kafka.partitions)
    # the least time between the starts of two sequencer transactions (runtime.core.pacing;
    # topology: engines.kafka.txn_interval_ms)
    txn_interval_ms: int = DEFAULT_TXN_INTERVAL_MS
    # the other regions (multi-region): name -> Kafka bootstrap (their ingress takes the
    # sends of conversations homed there; their events are mirrored here as
    # "<name>.msg.events") and name -> Redis URL (who is online there, for push)
    peer_kafka: dict[str, str] = field(default_factory=dict)
    peer_redis: dict[str, str] = field(default_factory=dict)
    # media blobs (optional): any S3 endpoint; "" = no s3 engine, media answers `unavailable`
    s3_endpoint: str = ""  # http(s)://host:port
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "msgctl-media"
    s3_region: str = "us-east-1"
    # engine security (docs/security.md): the CA the engines' certificates chain to ("" =
    # the system's roots), and this runtime's client certificate, its engine identity
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    kafka_tls: bool = False  # SSL to every Kafka (local and peers), presenting tls_cert
    cassandra_tls: bool = False
    cassandra_user: str = ""  # "" = no authentication
    cassandra_password: str = ""
    redis_user: str = ""  # an ACL user of every Redis (local and peers); TLS: rediss:// URLs
    redis_password: str = ""
    # an engine that trusts another CA than tls_ca (external ones): engine -> CA file, ""
    # for the system's roots
    engine_ca: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeConfig:
    region: str
    host: str
    port: int
    data_dir: str
    log_dir: str
    secret: str
    runtimes: list[str] = field(default_factory=lambda: ["gateway", "sequencer", "presence",
                                                          "push"])
    gateway_id: str = "gateway"
    # the ids of every gateway process of this region (cluster family): the router finds
    # a user's sessions in their route hashes
    region_gateways: list[str] = field(default_factory=list)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    backend: str = "embedded"  # or "cluster": Cassandra, Kafka, Redis from `engines`
    schema_owner: bool = True  # cluster sequencer: applies the CQL migrations (first region)
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    # TLS (the topology's `tls:`): the certificate chain and key the gateway's WebSocket
    # port and the media endpoint serve; empty: plain ws:// and http://
    tls_cert: str = ""
    tls_key: str = ""
    # the keyring message bodies and media metadata are sealed with (AES-256-GCM) by the
    # gateway and opened by the gateway and push; empty: stored in the clear
    keyring: str = ""
    push: PushConfig = field(default_factory=PushConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NodeConfig:
        raw = dict(raw)
        raw.pop("push_hide_body", None)  # written by older versions; push.hide_body says it
        limits = LimitsConfig(**raw.pop("limits", {}))
        presence = PresenceConfig(**raw.pop("presence", {}))
        engines = EnginesConfig(**raw.pop("engines", {}))
        media = MediaConfig(**raw.pop("media", {}))
        push = PushConfig(**raw.pop("push", {}))
        return cls(limits=limits, presence=presence, engines=engines, media=media, push=push,
                   **raw)

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        return cls.from_dict(json.loads(path.read_text()))
