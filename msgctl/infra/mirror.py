"""Kafka MirrorMaker 2 in dedicated mode: one process per region, pulling into it.

Every node gets the same ``mm2.properties`` (every cluster, every flow between
every pair) and is started with ``--clusters <region>``, so it runs only the
flows whose target is its own region: MM2's advice for geo-replication is to
consume remotely and produce locally. What is mirrored: ``msg.events`` (the
sequenced log the routers deliver from), ``msg.typing`` (the gateways' typing
events) and ``presence.events`` (online and offline of each region's users);
a mirrored topic is named ``<source>.<topic>`` (DefaultReplicationPolicy), so
nothing is mirrored back. MM2 also mirrors its
``heartbeats`` topics, which `msgctl status` reads for the link's liveness, and
``msgctl.warmup.mirror``, which the supervisor writes to warm each MM2 up before
`up` reports ready (msgctl.infra.warmup).
"""

from __future__ import annotations

from pathlib import Path

from msgctl.infra import jvm, kafka

MIRRORED = ("msg.events", "msg.typing", "presence.events")
WARMUP_TOPIC = "msgctl.warmup.mirror"
HEARTBEAT_S = 1
DEFAULT_HEAP_MB = 256

# the clients log every reconnect and config at INFO; the connectors' progress stays
LOG4J2 = kafka.log4j2(("org.apache.kafka.clients",
                       "org.apache.kafka.connect.runtime.WorkerSourceTask"))


def properties(clusters: dict[str, str],
               ssl: tuple[Path, Path] | None = None) -> dict[str, str]:
    """mm2.properties for `clusters` (region -> bootstrap servers), every pair both ways.
    `ssl`: (PEM key store with MM2's key and certificate, CA file): every client of every
    cluster speaks SSL as that identity (a Kafka super user)."""
    names = list(clusters)
    props: dict[str, str] = {"clusters": ", ".join(names)}
    for name, bootstrap in clusters.items():
        props[f"{name}.bootstrap.servers"] = bootstrap
        if ssl is not None:
            props |= {f"{name}.security.protocol": "SSL",
                      f"{name}.ssl.keystore.type": "PEM",
                      f"{name}.ssl.keystore.location": str(ssl[0]),
                      f"{name}.ssl.truststore.type": "PEM",
                      f"{name}.ssl.truststore.location": str(ssl[1])}
        # the sequencer writes in transactions: an aborted one must never be mirrored
        props[f"{name}.consumer.isolation.level"] = "read_committed"
        # a read_committed fetch is not woken by commit markers; a short wait bounds
        # the extra latency (the routers do the same)
        props[f"{name}.consumer.fetch.max.wait.ms"] = "20"
        props[f"{name}.producer.linger.ms"] = "0"
        props[f"{name}.producer.acks"] = "all"
    for src in names:
        for dst in names:
            if src != dst:
                props[f"{src}->{dst}.enabled"] = "true"
    props |= {
        "topics": "|".join(t.replace(".", r"\.") for t in (*MIRRORED, WARMUP_TOPIC)),
        "groups.exclude": ".*",  # no consumer groups to translate
        "emit.checkpoints.enabled": "false",
        # Offset syncs serve only to translate group offsets. With them the source Kafka
        # took a produce for about every transaction mirrored (the commit markers leave
        # gaps a sync must bridge). Off, MM2 refuses to start a flow while any
        # `offset-syncs.topic.*` setting is given.
        "emit.offset-syncs.enabled": "false",
        "sync.group.offsets.enabled": "false",
        "refresh.groups.enabled": "false",
        "sync.topic.configs.enabled": "false",
        "sync.topic.acls.enabled": "false",
        # a topic created after MM2 started is picked up within seconds, not minutes
        "refresh.topics.interval.seconds": "2",
        "emit.heartbeats.interval.seconds": str(HEARTBEAT_S),
        "tasks.max": "1",
        "offset.flush.interval.ms": "1000",
        # one broker per region
        "replication.factor": "1",
        "heartbeats.topic.replication.factor": "1",
        "checkpoints.topic.replication.factor": "1",
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
    }
    return props


def write_config(conf: Path, clusters: dict[str, str],
                 ssl: tuple[Path, Path] | None = None) -> Path:
    conf.mkdir(parents=True, exist_ok=True)
    path = conf / "mm2.properties"
    path.write_text("".join(f"{k} = {v}\n" for k, v in properties(clusters, ssl).items()))
    (conf / "log4j2.yaml").write_text(LOG4J2)
    return path


def argv(java: str, lib: Path, conf: Path, logs: Path, region: str,
         heap_mb: int = DEFAULT_HEAP_MB) -> list[str]:
    return [java, f"-Xms{min(128, heap_mb)}m", f"-Xmx{heap_mb}m", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", jvm.gc_log(logs), "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={logs}/hs_err_%p.log", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={conf / 'log4j2.yaml'}", "-cp", f"{lib}/*",
            "org.apache.kafka.connect.mirror.MirrorMaker", str(conf / "mm2.properties"),
            "--clusters", region]
