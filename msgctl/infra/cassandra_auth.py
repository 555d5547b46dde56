"""Cassandra logins of a deployment: msgctl's superuser, a role per runtime, their rights.

Run by the readiness probe of each provisioned node (so the runtimes, which
start once every engine is ready, find their roles), always against the seed
node, idempotent:

1. A fresh cluster has only the default ``cassandra``/``cassandra`` superuser:
   `msgctl_admin` (password from the deployment's credentials) replaces it
   (dropped), and ``system_auth`` replicates to the data centers known so far.
2. As more data centers join (regions), ``system_auth`` is extended to them and
   read back at ALL, which repairs the new replicas (a joining node streams
   nothing), so logins work in every region, also while regions are cut apart.
3. Each runtime role exists with its password; `msgctl_sequencer` may create
   keyspaces and has every right on the deployment's keyspace, `msgctl_gateway`
   and `msgctl_push` may read and write its tables, `msgctl_presence` nothing.
   With `keyspace` (the last node to join, when every data center exists) the
   keyspace is made here so those rights can be granted before any runtime starts.
"""

from __future__ import annotations

from typing import Any

from msgctl.infra import security
from runtime.adapters.cluster.cql_schema import check_keyspace, keyspace_cql

DEFAULT = ("cassandra", "cassandra")
READ_WRITE = ("gateway", "push")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def datacenters(session: Any) -> list[str]:
    local = session.execute("SELECT data_center FROM system.local").one()
    peers = session.execute("SELECT data_center FROM system.peers_v2")
    return sorted({local.data_center, *(p.data_center for p in peers)})


def _replication(session: Any, keyspace: str) -> dict[str, str]:
    row = session.execute("SELECT replication FROM system_schema.keyspaces "
                          "WHERE keyspace_name = %s", (keyspace,)).one()
    return dict(row.replication) if row is not None else {}


def bootstrap(session: Any, admin: str, password: str) -> None:
    """As the default superuser of a fresh cluster: replicate `system_auth` to its data
    centers and make msgctl's superuser (the caller then drops the default one)."""
    _extend_auth(session, datacenters(session))
    session.execute(f"CREATE ROLE IF NOT EXISTS {admin} WITH PASSWORD = {_quote(password)} "
                    "AND SUPERUSER = true AND LOGIN = true")


def _extend_auth(session: Any, dcs: list[str]) -> bool:
    """system_auth in every data center of `dcs` (one replica each); True if it changed."""
    have = _replication(session, "system_auth")
    wanted = {dc: "1" for dc in dcs}
    if have.get("class", "").endswith("NetworkTopologyStrategy") and \
            {k: v for k, v in have.items() if k != "class"} == wanted:
        return False
    session.execute(keyspace_cql("system_auth", {dc: 1 for dc in dcs})
                    .replace("CREATE KEYSPACE IF NOT EXISTS", "ALTER KEYSPACE"))
    return True


def _repair_auth(session: Any) -> None:
    """Read every auth table at ALL: blocking read repair copies the rows to new replicas."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    tables = session.execute("SELECT table_name FROM system_schema.tables "
                             "WHERE keyspace_name = 'system_auth'")
    for t in tables:
        session.execute(SimpleStatement(f"SELECT * FROM system_auth.{t.table_name}",
                                        consistency_level=ConsistencyLevel.ALL))


def ensure(session: Any, passwords: dict[str, str], keyspace: str | None) -> None:
    """Steps 2 and 3 (module docstring), as msgctl's superuser."""
    if _extend_auth(session, datacenters(session)):
        _repair_auth(session)
    session.execute("DROP ROLE IF EXISTS cassandra")
    for who in security.ROLES:
        role = security.cassandra_role(who)
        session.execute(f"CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = "
                        f"{_quote(passwords[who])} AND LOGIN = true")
    owner = security.cassandra_role("sequencer")
    session.execute(f"GRANT CREATE ON ALL KEYSPACES TO {owner}")
    if keyspace is None:
        return
    ks = check_keyspace(keyspace)
    if not _replication(session, ks):
        session.execute(keyspace_cql(ks, {dc: 1 for dc in datacenters(session)}))
    session.execute(f"GRANT ALL PERMISSIONS ON KEYSPACE {ks} TO {owner}")
    for who in READ_WRITE:
        for right in ("SELECT", "MODIFY"):
            session.execute(f"GRANT {right} ON KEYSPACE {ks} TO {security.cassandra_role(who)}")
