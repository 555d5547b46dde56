"""The engines msgctl can provision: Maven coordinates, default versions and ports."""

from __future__ import annotations

from dataclasses import dataclass, field

KAFKA, CASSANDRA, REDIS, S3 = "kafka", "cassandra", "redis", "s3"
ENGINES = (KAFKA, CASSANDRA, REDIS, S3)  # start order within a region


@dataclass(frozen=True)
class Engine:
    name: str
    default_version: str
    # group:artifact; every one is fetched at the engine's version unless it carries its own
    artifacts: tuple[str, ...] = ()
    ports: dict[str, int] = field(default_factory=dict)  # setting -> default
    default_heap_mb: int = 0
    # a JVM the runtimes load: warmed after it starts (msgctl.infra.warmup), at most this
    # many seconds by default; 0: not warmed
    default_warmup_s: int = 0
    source: str = "maven"  # or "os": a binary on PATH

    def coordinates(self, version: str) -> list[tuple[str, str, str]]:
        out = []
        for art in self.artifacts:
            group, artifact, *pinned = art.split(":")
            out.append((group, artifact, pinned[0] if pinned else version))
        return out


CATALOG: dict[str, Engine] = {
    KAFKA: Engine(
        KAFKA, "4.1.1",
        artifacts=(
            "org.apache.kafka:kafka_2.13",
            "org.apache.kafka:kafka-tools",  # StorageTool (format) and the admin tools
            "org.apache.kafka:connect-mirror",  # MirrorMaker 2, for multi-region replication
            "org.apache.kafka:connect-runtime",
            # Kafka 4 logs through slf4j 1.7 to log4j2 and leaves the binding to the
            # distribution; this is the one its own tarball ships
            "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
        ),
        ports={"port": 9092, "controller_port": 9093}, default_heap_mb=512,
        default_warmup_s=120),
    CASSANDRA: Engine(
        CASSANDRA, "5.0.6", artifacts=("org.apache.cassandra:cassandra-all",),
        ports={"port": 9042, "storage_port": 7000, "jmx_port": 7199}, default_heap_mb=512,
        default_warmup_s=120),
    REDIS: Engine(REDIS, "os", ports={"port": 6379}, source="os"),
    # S3Proxy: the S3 API over jclouds' filesystem blob store (media in the cluster family)
    S3: Engine(S3, "2.6.0", artifacts=("org.gaul:s3proxy",), ports={"port": 9000},
               default_heap_mb=256),
}
