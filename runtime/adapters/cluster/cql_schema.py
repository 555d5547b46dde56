"""CQL schema of the Cassandra message/state store, and its migrations.

`ensure_schema` creates the keyspace (NetworkTopologyStrategy, replicas per
data center) and applies, in order, every migration not yet recorded in the
keyspace's `schema_migrations` table. Every statement of a migration must be
idempotent (IF NOT EXISTS, ADD of a new column...), because two nodes running
`up` at once may both apply the same migration before either records it.

Layout and the invariants it keeps:

- `messages` is partitioned by (conv, bucket) with bucket = seq // bucket_size,
  so a hot conversation spreads over bounded partitions; clustering seq DESC.
- A conversation's head is the larger of `conv_heads.head` and the static
  `messages.head` of the bucket `conv_heads.head` is in (migration 4). The store
  writer puts the static head in the same single-partition mutation as the messages
  it covers when a batch continues a conversation in the bucket of its previous
  head (and the data center keeps one replica of each row: `store_messages`); a
  conversation's first batch, a batch that enters a new bucket and a batch written
  again after a failure write `conv_heads` after their messages instead. So a
  static head lands only in a bucket `conv_heads` points into before any message
  it covers is routed (the writer routes batches in order, each after its own
  heads), where readers look.
- `conv_heads.head`, `messages.head`, `device_cursors.acked`,
  `watermarks.delivered` and `watermarks.read` are monotonic registers: they are
  always written with `USING TIMESTAMP <value>`, so Cassandra's last-write-wins keeps the highest
  value whatever the arrival order (replayed batches, racing writers) without
  a read-before-write or a Paxos round. Never write them with a normal
  timestamp, and never DELETE them: a delete at wall-clock time would shadow
  every later value.
- `sender_cids` (migration 5) maps a send's (conv, sender, cid) to its seq and
  prev, for idempotent retries; a partition holds one sender's cids in one
  conversation, growing by about 70 bytes a message (a million messages from one
  sender in one conversation make 70 MB, within what Cassandra reads well).
  `message_cids` (one partition per cid) holds those written before migration 5
  and is only read.
- `store_settings` pins the bucket size chosen when the keyspace was created:
  readers and writers must agree on it.
- `conv_homes` holds a conversation's epochs after its first (region failover): the
  newest row is its home. Rows are inserted with IF NOT EXISTS; `fenced_last` is
  written by the old home, `base` (of a planned move) and `reconciled` by the new.
- `push_tokens` is indexed by token (migration 2) so that registering a token
  takes it from whichever account or device held it: a token addresses one
  installed app, and only the account that registered it last is notified there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from cassandra.cluster import Session

log = logging.getLogger("msgctl.store.cql")

DEFAULT_BUCKET_SIZE = 1000
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}\Z")
_DC = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]  # `{ks}` is replaced by the keyspace


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial store", (
        """CREATE TABLE IF NOT EXISTS {ks}.store_settings (
            name text PRIMARY KEY, value text)""",
        """CREATE TABLE IF NOT EXISTS {ks}.conversations (
            conv text PRIMARY KEY, members list<text>, home text, title text,
            created_ts bigint)""",
        """CREATE TABLE IF NOT EXISTS {ks}.user_conversations (
            user text, conv text, PRIMARY KEY ((user), conv))""",
        """CREATE TABLE IF NOT EXISTS {ks}.messages (
            conv text, bucket bigint, seq bigint, prev bigint, mid text, cid text,
            sender text, from_device text, ts bigint, kind text, body text, media text,
            PRIMARY KEY ((conv, bucket), seq))
            WITH CLUSTERING ORDER BY (seq DESC)""",
        # one partition per id; written until migration 5 (sender_cids), only read since
        """CREATE TABLE IF NOT EXISTS {ks}.message_cids (
            conv text, sender text, cid text, seq bigint, prev bigint,
            PRIMARY KEY ((conv, sender, cid)))""",
        """CREATE TABLE IF NOT EXISTS {ks}.conv_heads (
            conv text PRIMARY KEY, head bigint)""",
        # static columns: one read returns whether the device is known and all its cursors
        """CREATE TABLE IF NOT EXISTS {ks}.device_cursors (
            user text, device text, conv text, known boolean static, first_seen bigint static,
            acked bigint, PRIMARY KEY ((user, device), conv))""",
        """CREATE TABLE IF NOT EXISTS {ks}.watermarks (
            user text, conv text, delivered bigint, read bigint,
            PRIMARY KEY ((user, conv)))""",
        """CREATE TABLE IF NOT EXISTS {ks}.push_tokens (
            user text, device text, platform text, push_token text,
            PRIMARY KEY ((user), device))""",
    )),
    # a token is looked up by value only when it is registered (rare): a secondary index,
    # not a second table that would have to be kept in step with the first
    Migration(2, "push tokens by token", (
        "CREATE INDEX IF NOT EXISTS push_tokens_by_token ON {ks}.push_tokens (push_token)",
    )),
    # region failover (runtime.core.homes): a conversation's epochs, newest first, each
    # written once (IF NOT EXISTS), and the conversations moved to each region
    Migration(3, "homes and epochs", (
        """CREATE TABLE IF NOT EXISTS {ks}.conv_homes (
            conv text, epoch int, home text, previous text, kind text, base bigint,
            at bigint, fenced_last bigint, reconciled boolean, held bigint,
            PRIMARY KEY ((conv), epoch)) WITH CLUSTERING ORDER BY (epoch DESC)""",
        """CREATE TABLE IF NOT EXISTS {ks}.moved_to (
            home text, conv text, epoch int, PRIMARY KEY ((home), conv))""",
        "ALTER TABLE {ks}.messages ADD IF NOT EXISTS moved_from bigint",
    )),
    # a conversation's head inside its newest bucket's partition, written in the same
    # mutation as the messages it covers: the store writer's second round trip (and a
    # third of its writes) is gone for a batch that stays in its conversations' buckets;
    # `conv_heads` still points at the newest bucket (written when a batch enters one)
    Migration(4, "heads beside the messages", (
        "ALTER TABLE {ks}.messages ADD IF NOT EXISTS head bigint static",
    )),
    # the cid index with one partition per (conversation, sender) instead of one per
    # cid: a memtable flush and a compaction handle a row each, not a partition each
    # (its index entry, bloom filter key and key-cache entry), and a lookup is still
    # one read. `message_cids` keeps the rows written before, read when a cid is not
    # found here (see CassandraStore.lookup_cid)
    Migration(5, "cids by sender", (
        """CREATE TABLE IF NOT EXISTS {ks}.sender_cids (
            conv text, sender text, cid text, seq bigint, prev bigint,
            PRIMARY KEY ((conv, sender), cid))""",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def check_keyspace(keyspace: str) -> str:
    """The keyspace name, validated: it is interpolated into CQL."""
    if not _IDENT.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}: letters, digits and _ (max 48)")
    return keyspace


def keyspace_cql(keyspace: str, replication: dict[str, int]) -> str:
    if not replication:
        raise ValueError("replication needs at least one data center")
    parts = ["'class': 'NetworkTopologyStrategy'"]
    for dc, replicas in sorted(replication.items()):
        if not _DC.match(dc) or int(replicas) < 1:
            raise ValueError(f"invalid replication entry {dc!r}: {replicas!r}")
        parts.append(f"'{dc}': {int(replicas)}")
    return (f"CREATE KEYSPACE IF NOT EXISTS {check_keyspace(keyspace)} "
            f"WITH replication = {{{', '.join(parts)}}}")


def _ddl(session: Session, statement: str, wait_s: float) -> None:
    result = session.execute(statement, timeout=wait_s)
    # the driver already waited up to max_schema_agreement_wait; give it one more chance
    # before failing, since the next statement may need what this one created
    if not result.response_future.is_schema_agreed and not (
            session.cluster.control_connection.wait_for_schema_agreement(wait_time=wait_s)):
        raise RuntimeError(f"no schema agreement after {wait_s:.0f}s: {statement.split('(')[0]}")


def applied_versions(session: Session, keyspace: str) -> set[int]:
    rows = session.execute(f"SELECT version FROM {check_keyspace(keyspace)}.schema_migrations")
    return {row[0] for row in rows}


def ensure_schema(session: Session, keyspace: str, replication: dict[str, int],
                  wait_s: float = 30.0) -> None:
    """Create the keyspace and apply the missing migrations in order; idempotent.

    Blocking (schema changes are rare and run at start): call it from a thread when
    an event loop is running.
    """
    ks = check_keyspace(keyspace)
    _ddl(session, keyspace_cql(ks, replication), wait_s)
    _ddl(session, f"""CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (
        version int PRIMARY KEY, name text, applied_at timestamp)""", wait_s)
    done = applied_versions(session, ks)
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        log.info("keyspace %s: applying migration %d (%s)", ks, migration.version,
                 migration.name)
        for statement in migration.statements:
            _ddl(session, statement.format(ks=ks), wait_s)
        # recorded last: a migration interrupted half-way is applied again, whole
        session.execute(f"INSERT INTO {ks}.schema_migrations (version, name, applied_at) "
                        "VALUES (%s, %s, toTimestamp(now()))",
                        (migration.version, migration.name), timeout=wait_s)
