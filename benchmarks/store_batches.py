"""How long Cassandra takes to write k partitions: as one unlogged batch, and as k
requests at once.

    python benchmarks/store_batches.py [--home DIR] [--sizes 1,2,4,10,20] [--reps 40]
        [--json]

The store writer packs a batch's small partitions (a conversation's messages, a
sender's cid rows) into unlogged batches of up to 10. Cassandra applies such a batch's
partitions one after another on the request's thread, and with `commitlog_sync:
group` each one waits there for a commit-log sync of its own, so a batch takes about
as many sync windows as it has partitions; k requests sent at once wait for one or two
syncs together, but each request costs both sides CPU. This measures both against
the running deployment's first region (as msgctl's own Cassandra identity): for each
size k, `--reps` times one unlogged batch of k single-row partitions and then k
single-row requests at once, into a scratch table made for the run and dropped at the
end, and prints the medians (ms) and the node's `commitlog_sync_group_window`. Run it
on an idle deployment: traffic and other work on the machine add their waits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msgctl.home import Home, default_home  # noqa: E402
from msgctl.infra import security  # noqa: E402
from runtime.adapters.cluster import engine_auth  # noqa: E402


def session(home: Path, deployment: dict[str, Any]) -> tuple[Any, Any]:
    """A Cluster and session on the first region's Cassandra of `deployment` (its
    `deployment.json`, in `home`), as msgctl's own identity."""
    from cassandra.cluster import Cluster

    host, _, port = deployment["regions"][0]["engines"]["cassandra"].rpartition(":")
    cluster = Cluster([host], port=int(port),
                      **engine_auth.cassandra_kwargs(security.admin_engines(home)))
    return cluster, cluster.connect()


def measure(session: Any, keyspace: str, sizes: list[int], reps: int) -> dict[str, Any]:
    """Median ms of one batch of k partitions and of k requests at once, per size."""
    from cassandra.query import BatchStatement, BatchType

    table = f"{keyspace}.bench_batches_{uuid.uuid4().hex[:8]}"
    session.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, v bigint)")
    try:
        insert = session.prepare(f"INSERT INTO {table} (k, v) VALUES (?, ?)")
        keys = itertools.count()
        out = []
        for k in sizes:
            batched: list[float] = []
            apart: list[float] = []
            for _ in range(reps):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for _ in range(k):
                    batch.add(insert, (f"p{next(keys)}", 1))
                t = time.perf_counter()
                session.execute(batch)
                batched.append(time.perf_counter() - t)
                t = time.perf_counter()
                futures = [session.execute_async(insert, (f"p{next(keys)}", 1))
                           for _ in range(k)]
                for f in futures:
                    f.result()
                apart.append(time.perf_counter() - t)
            out.append({"partitions": k,
                        "one_batch_ms": round(1000 * statistics.median(batched), 2),
                        "apart_ms": round(1000 * statistics.median(apart), 2)})
        return {"reps": reps, "sizes": out}
    finally:
        session.execute(f"DROP TABLE IF EXISTS {table}")


def group_window(session: Any) -> str | None:
    rows = session.execute("SELECT value FROM system_views.settings "
                           "WHERE name = 'commitlog_sync_group_window'")
    row = rows.one()
    return None if row is None else str(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="the deployment's home (default: msgctl's)")
    parser.add_argument("--sizes", default="1,2,4,10,20",
                        help="partitions per write, comma-separated")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--keyspace", default="msgctl")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes whole numbers separated by commas")
    if args.reps < 1 or not sizes or min(sizes) < 1:
        parser.error("--reps and every size must be at least 1")
    home = Home(args.home or default_home())
    dep = home.deployment() or {}
    if home.supervisor_pid() is None or dep.get("backend") != "cluster":
        sys.exit(f"no cluster deployment is running under {home.root}")
    cluster, cql = session(home.root, dep)
    try:
        out = {"group_window": group_window(cql), **measure(cql, args.keyspace, sizes, args.reps)}
    finally:
        cluster.shutdown()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"commitlog_sync_group_window {out['group_window']}, median of {args.reps}")
    for row in out["sizes"]:
        print(f"{row['partitions']:3d} partitions: one batch {row['one_batch_ms']:7.2f} ms"
              f" | apart, at once {row['apart_ms']:7.2f} ms")


if __name__ == "__main__":
    main()
