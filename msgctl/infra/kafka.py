"""Kafka in KRaft combined mode (broker and controller in one JVM), single node per region.

The storage is formatted once with a cluster id kept in the data folder, so a
restart (or ``down`` / ``up``) reuses the same log and topics.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from msgctl.infra import jvm


def log4j2(quiet: tuple[str, ...]) -> str:
    """A log4j2.yaml printing to stdout at INFO, with the `quiet` loggers at WARN."""
    loggers = "".join(f"      - name: {name}\n        level: WARN\n" for name in quiet)
    return ("Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n"
            "      PatternLayout:\n        pattern: \"[%d] %p %m (%c)%n\"\n"
            f"  Loggers:\n    Logger:\n{loggers}    Root:\n      level: INFO\n"
            "      AppenderRef:\n        - ref: STDOUT\n")


LOG4J2 = log4j2(("kafka.request.logger", "state.change.logger"))


def cluster_id(data: Path) -> str:
    """The cluster id of this Kafka, made on first use and kept beside its log."""
    path = data / "cluster-id"
    if path.is_file():
        return path.read_text().strip()
    data.mkdir(parents=True, exist_ok=True)
    # what kafka-storage random-uuid prints: a UUID in unpadded base64url, never starting
    # with "-" (Kafka's own rule: a command line would read it as an option)
    value = "-"
    while value.startswith("-"):
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(value + "\n")
    return value


# a certificate's subject is "CN=<name>,O=msgctl" (msgctl.tls): the principal is its CN
PRINCIPAL_RULES = "RULE:^CN=([^,]+),O=msgctl$/$1/,DEFAULT"


def security_settings(keystore: Path, truststore: Path, super_users: list[str]
                      ) -> dict[str, str]:
    """SSL on both listeners with a client certificate required (the broker's own
    connection to its controller too), principals from certificates, ACLs enforced.

    `keystore`: a PEM file with the broker's key and certificate; `super_users`: the
    principals (certificate CNs) that bypass ACLs."""
    return {
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(truststore),
        "ssl.client.auth": "required", "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "ssl.principal.mapping.rules": PRINCIPAL_RULES,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": ";".join(f"User:{u}" for u in super_users),
        "allow.everyone.if.no.acl.found": "false",
    }


def write_config(conf: Path, data: Path, host: str, port: int, controller_port: int,
                 partitions: int = 1, security: dict[str, str] | None = None) -> Path:
    """server.properties and log4j2.yaml; returns the properties file. `security`:
    `security_settings` (then both listeners speak SSL only)."""
    conf.mkdir(parents=True, exist_ok=True)
    proto = "SSL" if security else "PLAINTEXT"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"{proto}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{proto}://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": f"CONTROLLER:{proto},{proto}:{proto}",
        "inter.broker.listener.name": proto,
        "log.dirs": str(data / "log"),
        "num.partitions": str(partitions),
        # one node: every internal topic has one replica
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        # consumers of a fresh group start at once instead of after 3 s
        "group.initial.rebalance.delay.ms": "0",
        # the log cleaner's offset map (compacted topics: msg.seq-state, presence.events,
        # the group and transaction logs) lives on the heap; the default 128 MiB was most of the
        # broker's live set and (then on G1) kept it in back-to-back mark cycles with
        # 20-30 ms remark pauses. 16 MiB maps ~600,000 keys per cleaning pass.
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        **(security or {}),
    }
    path = conf / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (conf / "log4j2.yaml").write_text(LOG4J2)
    return path


METASPACE_MB = 128  # the first metaspace threshold: above what the broker loads


def jvm_argv(java: str, lib: Path, conf: Path, logs: Path, heap_mb: int,
             gc_log: bool = False) -> list[str]:
    """`gc_log`: log every collection to `logs`/gc.log (the broker; not the format tool)."""
    # The parallel collector, not G1: the broker's live set is small (~90 MB) and its
    # garbage short-lived, so it makes young collections almost only. On the one-region
    # stack: young pauses p50 8-9 ms against G1's 18 ms, ~100 MiB less RSS, and lower
    # send->deliver latency over five fresh stacks against three (docs/cluster.md).
    # Its metaspace (classes, about 60 MB once serving) starts with a 21 MB threshold,
    # and the parallel collector answers each crossing with a full collection: two or
    # three while starting, and one minutes later (733 ms at 2,000 msgs/s, docs/infra.md).
    return [java, f"-Xms{min(256, heap_mb)}m", f"-Xmx{heap_mb}m", "-XX:+UseParallelGC",
            f"-XX:MetaspaceSize={METASPACE_MB}m",
            *([jvm.gc_log(logs)] if gc_log else []), "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={logs}/hs_err_%p.log", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={logs}", f"-Dlog4j2.configurationFile={conf / 'log4j2.yaml'}",
            "-cp", f"{lib}/*"]


def argv(java: str, lib: Path, conf: Path, logs: Path, heap_mb: int) -> list[str]:
    return [*jvm_argv(java, lib, conf, logs, heap_mb, gc_log=True), "kafka.Kafka",
            str(conf / "server.properties")]


def format_argv(java: str, lib: Path, conf: Path, logs: Path, data: Path) -> list[str]:
    """One-shot storage format; --ignore-formatted makes a second run harmless."""
    return [*jvm_argv(java, lib, conf, logs, 256), "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster_id(data)}", "-c", str(conf / "server.properties"),
            "--standalone", "--ignore-formatted"]
