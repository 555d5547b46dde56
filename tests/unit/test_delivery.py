"""ConvStream: in-order, gap-free, duplicate-free delivery on one connection."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.delivery import ConvStream, Entry, Offer

PROPS = settings(max_examples=250, deadline=None)


def chain(n: int, own: set[int] = frozenset()) -> list[Entry]:
    return [Entry(seq, seq - 1, seq in own) for seq in range(1, n + 1)]


# -- examples --------------------------------------------------------------------------------


def test_in_order_delivery():
    s = ConvStream()
    for e in chain(3):
        assert s.offer(e) is Offer.DELIVER
    assert s.last == 3


def test_duplicates_and_old_entries_are_dropped():
    s = ConvStream(last=2)
    e = chain(4)
    assert s.offer(e[0]) is Offer.DROP
    assert s.offer(e[1]) is Offer.DROP
    assert s.offer(e[2]) is Offer.DELIVER
    assert s.offer(e[2]) is Offer.DROP
    assert s.last == 3


def test_own_message_is_skipped_but_advances():
    s = ConvStream()
    e = chain(3, own={2})
    assert s.offer(e[0]) is Offer.DELIVER
    assert s.offer(e[1]) is Offer.SKIP
    assert s.last == 2
    assert s.offer(e[1]) is Offer.DROP
    assert s.offer(e[2]) is Offer.DELIVER


def test_gap_asks_for_a_fill_and_later_offers_wait():
    s = ConvStream()
    e = chain(6)
    assert s.offer(e[2]) is Offer.FILL
    assert s.filling
    assert s.last == 0
    assert s.offer(e[0]) is Offer.WAIT  # even the next one: the fill covers it
    out, more = s.filled(e[:3], page_full=True)
    assert out == e[:3] and more
    assert s.offer(e[3]) is Offer.WAIT  # arrived after the read of the page below
    # a short page would end the fill, but e[3] waited on it: read once more
    out, more = s.filled([], page_full=False)
    assert out == [] and more
    out, more = s.filled(e[3:5], page_full=False)
    assert out == e[3:5] and not more
    assert not s.filling
    assert s.last == 5
    assert s.offer(e[4]) is Offer.DROP
    assert s.offer(e[5]) is Offer.DELIVER


def test_fill_without_waiting_offers_ends_on_a_short_page():
    s = ConvStream()
    e = chain(3)
    assert s.offer(e[1]) is Offer.FILL
    out, more = s.filled(e[:2], page_full=False)
    assert out == e[:2] and not more and not s.filling
    assert s.offer(e[2]) is Offer.DELIVER


def test_fill_skips_own_entries_and_ones_already_sent():
    s = ConvStream(last=1)
    e = chain(5, own={3})
    assert s.offer(e[3]) is Offer.FILL
    out, more = s.filled(e, page_full=False)  # the page may overlap what was sent
    assert [x.seq for x in out] == [2, 4, 5]
    assert s.last == 5 and not more


def test_start_fill_when_idle_and_when_running():
    s = ConvStream(last=0)
    assert s.start_fill()
    assert s.filling
    assert not s.start_fill()  # one already runs: it will read once more instead
    out, more = s.filled([], page_full=False)
    assert out == [] and more
    out, more = s.filled([], page_full=False)
    assert out == [] and not more and not s.filling


def test_abort_fill_lets_the_next_offer_start_again():
    s = ConvStream()
    e = chain(4)
    assert s.offer(e[1]) is Offer.FILL
    assert s.offer(e[2]) is Offer.WAIT
    s.abort_fill()
    assert not s.filling
    assert s.last == 0
    assert s.offer(e[3]) is Offer.FILL  # still a gap: a new fill
    out, more = s.filled(e, page_full=False)
    assert [x.seq for x in out] == [1, 2, 3, 4] and not more


def test_abort_fill_clears_pending():
    s = ConvStream()
    e = chain(3)
    assert s.start_fill()
    assert not s.start_fill()  # pending
    s.abort_fill()
    assert s.start_fill()
    out, more = s.filled(e, page_full=False)
    assert len(out) == 3 and not more, "a pending flag from the aborted fill leaked"


def test_epoch_gap_in_seqs_is_not_a_gap_in_the_chain():
    s = ConvStream(last=5)
    e = Entry((1 << 40) | 1, 5)
    assert s.offer(e) is Offer.DELIVER
    assert s.last == e.seq


def test_last_between_seqs_fills_from_the_store():
    # resume from a cursor that is not itself a seq (clamped or arbitrary ack)
    s = ConvStream(last=4)
    e = Entry(10, 3)
    assert s.offer(e) is Offer.FILL
    out, more = s.filled([e], page_full=False)
    assert out == [e] and s.last == 10 and not more


# -- model-based property --------------------------------------------------------------------

PAGE = 3


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 25))
    gaps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    seqs: list[int] = []
    for g in gaps:
        seqs.append((seqs[-1] if seqs else 0) + g)
    own = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    entries = [Entry(seq, seqs[i - 1] if i else 0, own[i]) for i, seq in enumerate(seqs)]
    initial_last = draw(st.sampled_from([0, seqs[0]]) | st.integers(0, seqs[-1] + 1))
    # how many messages are already durable when the connection starts
    durable = draw(st.sampled_from([0, 1]) | st.integers(0, n))
    return entries, initial_last, durable


OPS = st.sampled_from(["commit", "live", "live", "offer", "offer", "read", "complete",
                       "start_fill", "abort"])


@PROPS
@given(scenarios(), st.lists(OPS, min_size=20, max_size=120), st.randoms(use_true_random=False))
def test_delivery_model(scenario, ops, rnd):
    entries, initial_last, durable = scenario
    stream = ConvStream(last=initial_last)
    expected = [e for e in entries if e.seq > initial_last and not e.own]
    delivered: list[Entry] = []
    owed = initial_last  # the highest seq offered: once no fill runs, the stream has it

    fill_wanted = False  # the stream asked for a read of the store after `last`
    page: tuple[list[Entry], bool] | None = None  # a page read, not yet handed to `filled`

    def read_store() -> tuple[list[Entry], bool]:
        # the store: the durable prefix, read after the stream's current position
        rows = [e for e in entries[:durable] if e.seq > stream.last]
        return rows[:PAGE], len(rows) >= PAGE

    def offer(e: Entry) -> None:
        nonlocal fill_wanted, owed
        owed = max(owed, e.seq)
        before = stream.last
        result = stream.offer(e)
        if result is Offer.DELIVER:
            assert not e.own and e.prev == before
            delivered.append(e)
        elif result is Offer.SKIP:
            assert e.own and e.prev == before
        elif result is Offer.DROP:
            assert e.seq <= before
        elif result is Offer.FILL:
            assert not fill_wanted and page is None
            fill_wanted = True
        else:
            assert result is Offer.WAIT and stream.filling
        if result in (Offer.DELIVER, Offer.SKIP):
            assert stream.last == e.seq
        else:
            assert stream.last == before

    def complete() -> None:
        nonlocal fill_wanted, page
        assert page is not None
        rows, full = page
        page = None
        out, more = stream.filled(rows, full)
        delivered.extend(out)
        fill_wanted = more
        assert stream.filling == more

    def check() -> None:
        assert fill_wanted == stream.filling
        assert delivered == expected[:len(delivered)], "out of order, duplicated or a gap"
        assert all(not e.own for e in delivered)
        assert stream.last >= initial_last
        if not stream.filling:
            # nothing offered is left behind: a WAIT is covered by the fill it waited on
            assert stream.last >= owed, "an offered message was lost"

    for op in ops:
        if op == "commit" and durable < len(entries):
            durable += 1
        elif op == "live" and durable < len(entries):
            # the usual path: a message becomes durable and is fanned out at once
            durable += 1
            offer(entries[durable - 1])
        elif op == "offer" and durable:
            # live fan-out: any durable message, in any order, possibly again
            offer(entries[rnd.randrange(durable)])
        elif op == "read" and fill_wanted and page is None:
            page = read_store()
        elif op == "complete" and page is not None:
            complete()
        elif op == "start_fill":
            if stream.start_fill():
                assert not fill_wanted and page is None
                fill_wanted = True
            else:
                assert fill_wanted
        elif op == "abort" and fill_wanted:
            stream.abort_fill()
            fill_wanted, page = False, None
            assert not stream.filling
            owed = stream.last  # what waited on the failed fill comes with the next offer
        check()

    # drain: everything becomes durable, a pending fill finishes, then one more live
    # event (or a resume fill) brings the stream to the head
    durable = len(entries)
    for _ in range(len(entries) + 2):
        if not fill_wanted:
            break
        if page is None:
            page = read_store()
        complete()
        check()
    assert not fill_wanted and not stream.filling
    offer(entries[-1])
    for _ in range(len(entries) + 2):
        if not fill_wanted:
            break
        page = read_store()
        complete()
        check()
    assert not stream.filling
    assert delivered == expected
    assert stream.last == max(initial_last, entries[-1].seq)


@PROPS
@given(st.integers(1, 30), st.sets(st.integers(1, 30)), st.integers(0, 30),
       st.randoms(use_true_random=False))
def test_resume_fill_then_live_in_any_order(n, own, initial_last, rnd):
    """The resume backlog (start_fill) races a shuffled live stream with duplicates."""
    entries = chain(n, own)
    initial_last = min(initial_last, n)
    stream = ConvStream(last=initial_last)
    delivered: list[Entry] = []
    assert stream.start_fill()
    live = entries + [rnd.choice(entries) for _ in range(n // 2)]
    rnd.shuffle(live)
    reading = True
    while live or reading:
        if live and (not reading or rnd.random() < 0.5):
            e = live.pop()
            r = stream.offer(e)
            if r is Offer.DELIVER:
                delivered.append(e)
            elif r is Offer.FILL:
                reading = True
        elif reading:
            rows = [e for e in entries if e.seq > stream.last]
            out, reading = stream.filled(rows[:PAGE], len(rows) >= PAGE)
            delivered.extend(out)
    assert delivered == [e for e in entries if e.seq > initial_last and not e.own]


def test_a_fill_that_may_not_accept_holes_stops_at_one_and_asks_again() -> None:
    s = ConvStream(last=3)
    assert s.offer(Entry(9, 8)) is Offer.FILL
    # the store holds 4, 5 and 9 (6..8 are still on their way from another data center)
    out, more = s.filled([Entry(4, 3), Entry(5, 4), Entry(9, 8)], False, accept_holes=False)
    assert [e.seq for e in out] == [4, 5] and more and s.hole and s.last == 5
    out, more = s.filled([Entry(6, 5), Entry(7, 6), Entry(8, 7), Entry(9, 8)], False,
                         accept_holes=False)
    assert [e.seq for e in out] == [6, 7, 8, 9] and not more and not s.hole


def test_a_new_epoch_below_what_the_device_has_is_no_hole() -> None:
    epoch1 = 1 << 40
    s = ConvStream(last=12)  # 11 and 12 were an old home's orphans, moved by a failover
    out, more = s.filled([Entry(epoch1 + 1, 10), Entry(epoch1 + 2, epoch1 + 1)], False,
                         accept_holes=False)
    assert [e.seq for e in out] == [epoch1 + 1, epoch1 + 2] and not more and not s.hole


def test_holes_are_taken_as_the_chain_once_accepted() -> None:
    s = ConvStream(last=3)
    s.start_fill()
    out, more = s.filled([Entry(4, 3), Entry(9, 8)], False)
    assert [e.seq for e in out] == [4, 9] and not more
