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
    send_queue_bytes: int = 4 * 1024 * 1024  # queued for one connection before it counts as slow
    inflight_sends: int = 256


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
class PushConfig:
    """Push providers (issue: push): owned by the push work."""

    hide_body: bool = False


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
    partitions: int = 8  # of msg.ingress, msg.events and msg.seq-state


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
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    push_hide_body: bool = False
    backend: str = "embedded"  # or "cluster": Cassandra, Kafka, Redis from `engines`
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    push: PushConfig = field(default_factory=PushConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NodeConfig:
        raw = dict(raw)
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
