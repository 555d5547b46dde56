"""Fixtures of the store contract suite: each store port implementation, ready to use.

`store` is parametrized over the embedded SqliteStore (a temporary file) and the
cluster CassandraStore (a keyspace of its own for the test session, dropped at
the end). Where Cassandra runs is decided in one place, `cassandra_endpoint`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy

from runtime.adapters.cluster.cassandra_store import CassandraStore
from runtime.adapters.embedded.sqlite_store import SqliteStore
from runtime.ports import Message
from tests import engines

# small, so a few dozen messages cross several bucket boundaries
TEST_BUCKET_SIZE = 10
# the driver's login and TLS context for that Cassandra (set with the endpoint: the
# deployment's own engines want msgctl's identity, tests.engines)
CLUSTER_AUTH: dict[str, Any] = {}


@pytest.fixture(scope="session")
def cassandra_endpoint(request: pytest.FixtureRequest) -> tuple[str, int, str]:
    """(host, port, local data center) of the Cassandra the cluster-family tests use.

    The only place that knows where it runs: by default the Cassandra of the session's
    one-region cluster deployment, provisioned by `msgctl up` like a user's (shared with
    the end-to-end tests); MSGCTL_TEST_CASSANDRA=host:port (and MSGCTL_TEST_CASSANDRA_DC,
    default `local`) points the suite at another one. Unreachable is a failure, not a
    skip: a silently skipped contract proves nothing.
    """
    raw = os.environ.get("MSGCTL_TEST_CASSANDRA")
    if raw is None:
        dep = request.getfixturevalue("cluster_deployment")
        raw = f"127.0.0.1:{dep.port + 22}"  # see tests.conftest.write_cluster_topology
        CLUSTER_AUTH.update(engines.cassandra_kwargs(dep.home))
    host, _, port_s = raw.rpartition(":")
    if not host or not port_s.isdigit():
        pytest.fail(f"MSGCTL_TEST_CASSANDRA={raw!r}: expected host:port")
    dc = os.environ.get("MSGCTL_TEST_CASSANDRA_DC", "local")
    try:
        socket.create_connection((host, int(port_s)), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"Cassandra for the contract tests is not reachable at {host}:{port_s} "
                    f"({exc}); start it or point MSGCTL_TEST_CASSANDRA=host:port at one")
    return host, int(port_s), dc


@pytest.fixture(scope="session")
def cassandra_keyspace(cassandra_endpoint: tuple[str, int, str]) -> Iterator[str]:
    """A keyspace for this test session; the stores create it, the teardown drops it."""
    keyspace = f"contract_{uuid.uuid4().hex[:12]}"
    yield keyspace
    host, port, dc = cassandra_endpoint
    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(dc))
    cluster = Cluster([host], port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile}, **CLUSTER_AUTH)
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


async def cassandra_store(endpoint: tuple[str, int, str], keyspace: str,
                          **kwargs: Any) -> CassandraStore:
    host, port, dc = endpoint
    kwargs.setdefault("bucket_size", TEST_BUCKET_SIZE)
    kwargs.setdefault("auth", CLUSTER_AUTH)
    store = CassandraStore([host], port, keyspace, dc, {dc: 1}, **kwargs)
    await store.connect()
    return store


@pytest.fixture(params=["embedded", "cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "embedded":
        sqlite = SqliteStore(tmp_path / "region.db")
        yield sqlite
        await sqlite.close()
        return
    cassandra = await cassandra_store(request.getfixturevalue("cassandra_endpoint"),
                                      request.getfixturevalue("cassandra_keyspace"))
    yield cassandra
    await cassandra.close()


async def settle(store: Any) -> None:
    """Wait until writes the store acknowledged early are visible to its reads.

    SqliteStore queues cursor and watermark writes (write_nowait) and its writer commits
    in order, so one awaited no-op write is a barrier. CassandraStore awaits every write.
    """
    if isinstance(store, SqliteStore):
        await store.write(lambda conn: None)


async def write(store: Any, messages: list[Message]) -> None:
    """Messages into the store the way its family does: the store writer, or the log."""
    if hasattr(store, "upsert_messages"):
        await store.upsert_messages(messages)
    else:
        await store.append(messages)
