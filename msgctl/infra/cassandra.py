"""Cassandra 5 on Java 17, one node per region, configured like ccm does for a dev cluster.

The data center is the region's name (GossipingPropertyFileSnitch reads it
from cassandra-rackdc.properties) so the multi-region topology can add data
centers without renaming anything. Commit log sync is ``group``: a write is
acknowledged only once its batch is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from msgctl.infra import jvm

LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""

# From Cassandra's own conf/jvm-server.options and jvm17-server.options: the JDK
# internals it reaches into on Java 17, and its usual server flags
JDK17_ACCESS = [
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    *[x for mod in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader",
        "java.base/jdk.internal.ref", "java.base/jdk.internal.reflect",
        "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal",
        "java.base/sun.nio.ch", "java.base/java.io", "java.base/java.nio",
        "java.base/java.util.concurrent", "java.base/java.util",
        "java.base/java.util.concurrent.atomic", "java.base/java.lang",
        "java.base/java.math", "java.base/java.lang.reflect", "java.base/java.net",
    ) for x in ("--add-opens", f"{mod}=ALL-UNNAMED")],
]


def security_settings(keystore: Path, truststore: Path) -> dict[str, Any]:
    """TLS for clients and between nodes (every client and node presents a certificate the
    deployment CA signed: `truststore`), logins and permissions.

    `keystore`: a PEM file with this node's key and certificate."""
    pem = {"class_name": "org.apache.cassandra.security.PEMBasedSslContextFactory"}
    common = {"keystore": str(keystore), "truststore": str(truststore),
              "ssl_context_factory": pem, "require_client_auth": True,
              "accepted_protocols": ["TLSv1.2", "TLSv1.3"]}
    return {
        "authenticator": "PasswordAuthenticator",
        "authorizer": "CassandraAuthorizer",
        "role_manager": "CassandraRoleManager",
        "client_encryption_options": {"enabled": True, "optional": False, **common},
        # `all`: the storage port carries the inter-DC (region) traffic too
        "server_encryption_options": {"internode_encryption": "all", "optional": False,
                                      **common},
    }


def takes_direct_io(folder: Path) -> bool:
    """Whether files in `folder` (made if missing) open with O_DIRECT: most disk file
    systems do, tmpfs on older kernels does not; Cassandra's `auto` would still pick
    direct writes there (it asks only for the block size) and fail to start."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".direct-io-probe"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | flag, 0o600))
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def write_config(conf: Path, data: Path, host: str, port: int, storage_port: int,
                 datacenter: str, seed: str | None = None,
                 security: dict[str, Any] | None = None) -> Path:
    """cassandra.yaml, cassandra-rackdc.properties and logback.xml; returns the yaml.

    `seed` is the first region's node (host) when this one joins it: one cluster,
    a data center per region. Every node of a cluster uses the same storage port.
    `security`: `security_settings` (TLS and logins), merged in.
    """
    conf.mkdir(parents=True, exist_ok=True)
    settings = {
        "cluster_name": "msgctl",
        "num_tokens": 16,
        "allocate_tokens_for_local_replication_factor": 1,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "data_file_directories": [str(data / "data")],
        "commitlog_directory": str(data / "commitlog"),
        "saved_caches_directory": str(data / "saved_caches"),
        "hints_directory": str(data / "hints"),
        "cdc_raw_directory": str(data / "cdc_raw"),
        # durability: acknowledge a write once its group of writes is on disk; a short
        # window, since the store writer waits for each batch before routing it. The
        # shortest the setting takes: the partitions of an unlogged batch are applied one
        # after another, each waiting for a sync of its own (a batch of 10 partitions
        # took 11.9 ms on an idle node with 2 ms, 6.6 ms with 1 ms: benchmarks/store_batches.py)
        "commitlog_sync": "group",
        "commitlog_sync_group_window": "1ms",
        # each group written straight to the disk (O_DIRECT, and O_DSYNC: durable when
        # the write returns), not through a memory map that is then msync'ed and dropped
        # from the page cache: 1.5-2 points less of a core at 1,000-2,000 msgs/s and a
        # store write 1-3 ms sooner (see docs/infra.md); the map where the file system
        # refuses O_DIRECT
        "commitlog_disk_access_mode": ("direct" if takes_direct_io(data / "commitlog")
                                       else "legacy"),
        "seed_provider": [{"class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                           "parameters": [{"seeds": f"{seed or host}:{storage_port}"}]}],
        # a fresh, empty cluster: a joining data center has nothing to stream
        "auto_bootstrap": seed is None,
        "listen_address": host,
        "rpc_address": host,
        "storage_port": storage_port,
        "native_transport_port": port,
        "endpoint_snitch": "GossipingPropertyFileSnitch",
        "start_native_transport": True,
        # a small machine: fewer threads than the defaults made for 32 cores
        "concurrent_reads": 8,
        "concurrent_writes": 32,  # writes mostly wait on the commit log, not the CPU
        "concurrent_counter_writes": 8,
        # every engine shares two cores here: at the default 64 MiB/s a compaction took a
        # core for a second or more, and the writes it starved held deliveries up for as
        # long (p99 1.5 s at 2,000 msgs/s); at 8 MiB/s it takes a fifth of a core for
        # longer, several times what this traffic needs (see docs/infra.md)
        "compaction_throughput": "8MiB/s",
        # memtables as tries with their cells off the heap (Cassandra 5's own
        # cassandra_latest.yaml): young collections every ~10 s instead of ~3 s under
        # traffic, and a cheaper write path at 2,000 msgs/s (see docs/infra.md); the
        # off-heap part is bounded at a quarter of the heap, as the on-heap part is
        "memtable_allocation_type": "offheap_objects",
        "memtable": {"configurations": {
            "skiplist": {"class_name": "SkipListMemtable"},
            "trie": {"class_name": "TrieMemtable"},
            "default": {"inherits": "trie"}}},
        **(security or {}),
    }
    path = conf / "cassandra.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    (conf / "cassandra-rackdc.properties").write_text(f"dc={datacenter}\nrack=rack1\n")
    (conf / "logback.xml").write_text(LOGBACK)
    return path


# Cassandra's shared request threads (SEPWorker) wait for work in timed turns of 10 us;
# with the kernel's default 50 us timer slack each idle worker woke 15-20,000 times a
# second, and those wake-ups were 29% of the node's CPU at 1,000 msgs/s. With 500 us
# its CPU fell by a quarter and its context switches by two thirds, for about 2 ms
# more per store write at 1,000 msgs/s (see docs/infra.md)
TIMER_SLACK_US = 500


def argv(java: str, lib: Path, conf: Path, data: Path, logs: Path, jmx_port: int,
         heap_mb: int, single_node: bool = True) -> list[str]:
    jamm = sorted(lib.glob("jamm-*.jar"))
    agent = [f"-javaagent:{jamm[0]}"] if jamm else []  # memtable sizing measures objects
    return [
        # G1 sizes the young generation for a 20 ms pause goal (a fixed quarter of the
        # heap made young pauses of 33 ms p50; 17-19 ms this way, see docs/infra.md)
        java, f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m", "-XX:MaxGCPauseMillis=20",
        "-Xss256k", "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", jvm.gc_log(logs),
        "-XX:MaxTenuringThreshold=1", "-XX:+PerfDisableSharedMem",
        "-XX:+ExitOnOutOfMemoryError", f"-XX:ErrorFile={logs}/hs_err_%p.log",
        "-Djava.net.preferIPv4Stack=true", "-Djdk.attach.allowAttachSelf=true",
        "-ea", "-da:net.openhft...", *agent, *JDK17_ACCESS,
        f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={data}", f"-Dcassandra.logdir={logs}",
        f"-Dlogback.configurationFile={conf / 'logback.xml'}",
        "-Dcassandra-foreground=yes",
        # a single seed node: nobody to gossip with, so do not wait for gossip to settle
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        # a node that is its own only seed has no ring to learn before choosing its
        # tokens; the default 30 s RING_DELAY is pure waiting there (ccm does the same).
        # A node joining a seed learns the ring over gossip first: a few seconds do.
        f"-Dcassandra.ring_delay_ms={1000 if single_node else 5000}",
        f"-Dcassandra.jmx.local.port={jmx_port}",
        # the default superuser (replaced by msgctl's own at once, see probes) is made at
        # start instead of 10 s later; without logins it changes nothing
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-cp", f"{conf}:{lib}/*", "org.apache.cassandra.service.CassandraDaemon",
    ]
