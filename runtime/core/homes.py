"""Homes and epochs of conversations: the rules of failover, fencing and reconciliation.

Pure (no I/O). A conversation is sequenced by its home region. Its first home is
the one named at creation (epoch 0, no record); every later home is a `HomeRecord`
with a higher epoch, written only by compare-and-set (`msgctl region failover`,
`move`, `failback`). Seqs of epoch e are ``e << 40 | counter``, so every seq of a
new epoch sorts after every seq of the old ones.

A new home continues from `base`, the highest seq it held when it took over: the
first message of the new epoch has ``prev == base``. Any message of an older epoch
above `base` is an **orphan**: the old home acknowledged it on its side of a split
(or before the move, without it reaching the new home). Orphans are not part of
the conversation's history; reconciliation sequences each one again in the new
epoch (deduplicated by sender and cid) with `moved_from` naming the seq it was
first acknowledged under, and then deletes it.

The old home learns of a new epoch either in band (a `home` record on its ingress,
processed in order with sends) or on its first look at the conversation; from then
it is **fenced**: it sequences nothing more for the conversation, and records
`fenced_last`, the last seq it made. Reconciliation is complete once the new home's
store holds the old home's whole chain from `fenced_last` down to `base`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from runtime.core.sequencing import make_seq, split_seq

KINDS = ("failover", "move", "failback")


class HomeError(ValueError):
    """A home change that must not be made; the message is one line for the operator."""


@dataclass(frozen=True)
class HomeRecord:
    """One epoch of a conversation: who sequences it, continuing after which seq."""

    conv: str
    epoch: int
    home: str
    previous: str  # the home of the epoch before (its fence is awaited)
    kind: str  # failover | move | failback
    base: int | None  # None: a planned move waiting for the old home's last seq
    at: int = 0  # ms, when the operator made the change
    fenced_last: int | None = None  # the old home's last seq, once it learned of this epoch
    reconciled: bool = False
    held: int = 0  # the new home's stored head when the change was made

    @property
    def active(self) -> bool:
        """The new home may sequence (a move becomes active once the old home is fenced
        and the new home holds everything it made)."""
        return self.base is not None

    def first_seq(self) -> int:
        return make_seq(self.epoch, 1)


def initial(conv: str, home: str) -> HomeRecord:
    """The implicit epoch 0 of a conversation that never moved."""
    return HomeRecord(conv, 0, home, home, "create", 0, reconciled=True)


def next_record(current: HomeRecord, to: str, kind: str, *, held: int,
                at: int = 0) -> HomeRecord:
    """The record that moves `current` to region `to`; HomeError when it must not."""
    if kind not in KINDS:
        raise HomeError(f"unknown kind of home change {kind!r}")
    if to == current.home:
        raise HomeError(f"conversation {current.conv} is already homed in {to}")
    if not current.active:
        raise HomeError(f"conversation {current.conv} is still moving to {current.home}")
    if kind != "failover" and not current.reconciled:
        raise HomeError(f"conversation {current.conv} is not reconciled after its failover "
                        f"to {current.home} yet; wait for 'msgctl region status' to show it")
    # a failover continues from what the new home holds; a planned move (and a failback)
    # waits for the old home's last seq, so nothing is left behind and nothing repeats
    base = held if kind == "failover" else None
    return HomeRecord(current.conv, current.epoch + 1, to, current.home, kind, base, at,
                      held=held)


def is_orphan(seq: int, record: HomeRecord) -> bool:
    """A seq of an older epoch above the base: acknowledged by an old home, not history."""
    if record.epoch == 0 or record.base is None:
        return False
    return split_seq(seq)[0] < record.epoch and seq > record.base


def effective_head(stored: int, record: HomeRecord) -> int:
    """The head a new home continues from: the store's, unless that is an orphan."""
    if record.base is not None and is_orphan(stored, record):
        return record.base
    return stored


def with_fence(record: HomeRecord, last: int) -> HomeRecord:
    return replace(record, fenced_last=last)


@dataclass(frozen=True)
class ChainWalk:
    """What the new home's store holds of the old home's chain above `base`."""

    complete: bool
    orphans: list[int]  # ascending seqs of the old epochs above base, found so far
    missing: int | None  # the first seq the walk could not find


def walk_chain(last: int, base: int, prev_of: Callable[[int], int | None]) -> ChainWalk:
    """Follow `prev` links from `last` down to `base`; `prev_of(seq)` is None when the
    store lacks that message. Complete when the walk gets to `base` or below it: `base`
    need not be on the chain (a planned move's `held` may be an orphan's seq, which the
    chain passes over)."""
    found: list[int] = []
    seq = last
    seen: set[int] = set()
    while seq > base:
        if seq in seen:  # a loop in corrupt data: never spin
            return ChainWalk(False, sorted(found), seq)
        seen.add(seq)
        prev = prev_of(seq)
        if prev is None:
            return ChainWalk(False, sorted(found), seq)
        found.append(seq)
        seq = prev
    return ChainWalk(True, sorted(found), None)


def to_resend(orphans: Iterable[tuple[int, str, str]],
              present: set[tuple[str, str]]) -> list[int]:
    """Orphans (seq, sender, cid) whose (sender, cid) the new epoch does not hold yet,
    in their old order: a sender that retried at the new home is not sequenced twice."""
    out: list[int] = []
    taken = set(present)
    for seq, sender, cid in sorted(orphans):
        if (sender, cid) not in taken:
            taken.add((sender, cid))
            out.append(seq)
    return out
