"""How the Cassandra store writer packs a batch's partitions into requests (`pack`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.adapters.cluster.cassandra_store import _BATCH_ROWS, pack


def test_small_partitions_share_a_request_up_to_ten_or_the_size_bound() -> None:
    groups = [(100, [f"m{i}"]) for i in range(25)]
    assert [len(r) for r in pack(groups, max_parts=10, max_bytes=4096)] == [10, 10, 5]
    assert [len(r) for r in pack(groups, max_parts=10, max_bytes=450)] == [4] * 6 + [1]


def test_a_large_partition_goes_alone_and_its_rows_stay_together() -> None:
    big = (10_000, [f"b{i}" for i in range(3)])
    out = pack([(100, ["a"]), big, (100, ["c"])], max_parts=10, max_bytes=4096)
    assert ["b0", "b1", "b2"] in out
    assert ["a", "c"] in out


def test_a_partition_of_many_rows_is_split_into_single_partition_requests() -> None:
    rows = [f"r{i}" for i in range(_BATCH_ROWS * 2 + 1)]
    out = pack([(1000, rows)])
    assert [len(r) for r in out] == [_BATCH_ROWS, _BATCH_ROWS, 1]


@given(st.lists(st.tuples(st.integers(1, 20_000), st.integers(1, 150)), max_size=60))
def test_every_row_is_written_once_and_no_shared_request_breaks_a_bound(
        spec: list[tuple[int, int]]) -> None:
    groups = [(size, [(g, i) for i in range(n)]) for g, (size, n) in enumerate(spec)]
    out = pack(groups, max_parts=10, max_bytes=4096)
    flat = [row for request in out for row in request]
    assert sorted(flat) == sorted(row for _, rows in groups for row in rows)
    for request in out:
        parts = {g for g, _ in request}
        if len(parts) > 1:  # several partitions: within the warn thresholds
            assert len(parts) <= 10
            assert sum(spec[g][0] for g in parts) <= 4096
        assert len(request) <= _BATCH_ROWS
