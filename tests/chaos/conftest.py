"""Fixtures for the chaos tests: every test leaves the firewall as it found it.

Network faults need root (iptables, cgroups); these tests run as root in CI and
fail, rather than skip, without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from chaos import netfilter


def require_root() -> None:
    assert os.geteuid() == 0 and netfilter.unavailable_reason() is None, (
        "the chaos tests cut links with iptables: run them as root with iptables installed "
        f"({netfilter.unavailable_reason()})")


@pytest.fixture(autouse=True)
def firewall_unchanged() -> Iterator[str]:
    """The ruleset after the test equals the one before it (counters aside)."""
    before = netfilter.snapshot()
    yield before
    assert netfilter.snapshot() == before, "the test left firewall rules behind"
