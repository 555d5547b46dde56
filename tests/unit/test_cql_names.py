"""Names interpolated into CQL: only what the rules allow, to the last character."""

from __future__ import annotations

import pytest

from runtime.adapters.cluster import cql_schema


@pytest.mark.parametrize("name", ["ks\n", "ks;", "", "1ks", "k" * 49])
def test_bad_keyspace_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        cql_schema.check_keyspace(name)


def test_a_newline_cannot_ride_into_the_replication_map() -> None:
    assert "'us-east': 1" in cql_schema.keyspace_cql("msgctl", {"us-east": 1})
    with pytest.raises(ValueError):
        cql_schema.keyspace_cql("msgctl", {"us-east\n": 1})
