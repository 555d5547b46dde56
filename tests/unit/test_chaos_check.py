"""The drill checker in chaos/check.py: crafted histories, one per anomaly, with the
witness each names; what is not an anomaly (own messages, redelivery on resume,
recovered/indeterminate/failed sends); availability, convergence and lag figures;
and hypothesis properties over histories of a simulated correct system, which must
check valid, and of the same histories with one fault injected, which must not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chaos.check import ANOMALIES, WITNESSES, Result, check
from chaos.history import Record

T = TypeVar("T")
PROPS = settings(max_examples=100, deadline=None)


# -- record builders -------------------------------------------------------------------------


def conv_rec(conv: str, home: str, members: list[str], t: float = 0.0) -> Record:
    return {"kind": "conv", "t": t, "conv": conv, "home": home, "members": members}


def send(t: float, type_: str, process: str, conv: str, cid: str, *, region: str = "r1",
         attempt: int = 1, seq: int | None = None, prev: int | None = None,
         error: str | None = None) -> Record:
    r: Record = {"kind": "send", "t": t, "type": type_, "process": process, "region": region,
                 "conv": conv, "cid": cid, "attempt": attempt}
    if type_ == "ok":
        r["seq"], r["prev"] = seq, (seq - 1 if prev is None and seq is not None else prev)
    if type_ in ("fail", "info"):
        r["error"] = error or "timeout"
    return r


def sent(t: float, process: str, conv: str, cid: str, seq: int, *, region: str = "r1",
         ack_after: float = 0.1) -> list[Record]:
    """An invoke and its ok for seq (prev = seq - 1)."""
    return [send(t, "invoke", process, conv, cid, region=region),
            send(t + ack_after, "ok", process, conv, cid, region=region, seq=seq)]


def deliver(t: float, process: str, conn: int, conv: str, seq: int, cid: str, frm: str, *,
            prev: int | None = None, region: str = "r1") -> Record:
    return {"kind": "deliver", "t": t, "process": process, "region": region, "conn": conn,
            "conv": conv, "seq": seq, "prev": seq - 1 if prev is None else prev, "cid": cid,
            "from": frm}


def conn_rec(t: float, type_: str, process: str, conn: int, region: str = "r1") -> Record:
    r: Record = {"kind": "conn", "t": t, "type": type_, "process": process, "region": region,
                 "conn": conn}
    if type_ == "close":
        r["reason"] = "closed"
    return r


def msg(seq: int, cid: str, frm: str, prev: int | None = None) -> dict[str, Any]:
    return {"seq": seq, "prev": seq - 1 if prev is None else prev, "cid": cid, "from": frm}


def read(region: str, conv: str, msgs: list[dict[str, Any]], *, error: str | None = None,
         t: float = 100.0) -> Record:
    return {"kind": "read", "t": t, "region": region, "conv": conv,
            "msgs": [] if error else msgs, "error": error}


def nemesis(t: float, type_: str, id_: str, fault: str = "partition r1 r2") -> Record:
    return {"kind": "nemesis", "t": t, "type": type_, "id": id_, "fault": fault}


def lag(t: float, source: str, target: str, lag_ms: int | None,
        stalled: bool = False) -> Record:
    return {"kind": "lag", "t": t, "source": source, "target": target, "lag_ms": lag_ms,
            "stalled": stalled}


def phase(t: float, name: str, seconds: float | None = None) -> Record:
    r: Record = {"kind": "phase", "t": t, "name": name}
    if seconds is not None:
        r["seconds"] = seconds
    return r


def counts_of(res: Result, **expected: int) -> None:
    """Every anomaly count is as given, and zero where not given."""
    assert res.counts == {a: expected.get(a, 0) for a in ANOMALIES}
    assert res.valid == (not any(expected.values()))
    assert set(res.witnesses) == {a for a, n in expected.items() if n}


# A small correct history: a/1 sends m1..m3 to conv c (home r1, members a and b),
# both regions store them, and b/1 receives them on connection 1 and stays connected.
A, B = "a/1", "b/1"
MSGS = [msg(1, "m1", A), msg(2, "m2", A), msg(3, "m3", A)]


def sends_a(n: int = 3) -> list[Record]:
    return [r for i in range(1, n + 1) for r in sent(float(i), A, "c", f"m{i}", i)]


def base(*, reads: dict[str, list[dict[str, Any]]] | None = None,
         deliveries: list[int] | None = None) -> list[Record]:
    reads = {"r1": MSGS, "r2": MSGS} if reads is None else reads
    out = [conv_rec("c", "r1", ["a", "b"]), conn_rec(0.5, "open", B, 1)]
    out += sends_a()
    out += [deliver(10.0 + s, B, 1, "c", s, f"m{s}", A)
            for s in ([1, 2, 3] if deliveries is None else deliveries)]
    out += [read(region, "c", msgs) for region, msgs in reads.items()]
    return out


# -- a correct history -----------------------------------------------------------------------


def test_a_correct_history_is_valid() -> None:
    res = check(base())
    counts_of(res)
    assert res.sends == {"invoked": 3, "acknowledged": 3, "failed": 0, "indeterminate": 0,
                         "recovered": 0}
    assert res.deliveries == 3
    assert res.witnesses == {} and res.recovered == []


def test_an_empty_history_is_valid() -> None:
    res = check([])
    counts_of(res)
    assert res.availability == {} and res.converge_s is None and res.peak_lag_ms == {}


def test_to_dict_carries_every_field() -> None:
    d = check(base()).to_dict()
    assert set(d) == {"valid", "counts", "witnesses", "sends", "deliveries", "availability",
                      "converge_s", "peak_lag_ms", "recovered"}
    assert d["valid"] is True and d["deliveries"] == 3


# -- lost ------------------------------------------------------------------------------------


def test_lost_an_acked_cid_missing_from_the_only_read() -> None:
    res = check(base(reads={"r1": MSGS[:2]}, deliveries=[1, 2]))
    counts_of(res, lost=1)
    assert res.witnesses["lost"] == [
        {"conv": "c", "cid": "m3", "sender": A, "seq": 3, "region": "r1"}]


def test_lost_in_one_region_names_that_region() -> None:
    res = check(base(reads={"r1": MSGS, "r2": MSGS[:2]}))
    # r2 lacks seq 3 too, so the regions also disagree there
    counts_of(res, lost=1, divergence=1)
    assert res.witnesses["lost"] == [
        {"conv": "c", "cid": "m3", "sender": A, "seq": 3, "region": "r2"}]
    assert res.witnesses["divergence"] == [
        {"conv": "c", "seq": 3, "regions": {"r1": "a:m3", "r2": None}}]


def test_lost_witnesses_are_capped_but_the_count_is_complete() -> None:
    n = WITNESSES + 5
    recs = [r for i in range(1, n + 1) for r in sent(float(i), A, "c", f"m{i}", i)]
    res = check([conv_rec("c", "r1", ["a"]), *recs, read("r1", "c", [])])
    counts_of(res, lost=n)
    assert len(res.witnesses["lost"]) == WITNESSES


# -- duplicated ------------------------------------------------------------------------------


def test_duplicated_one_sender_and_cid_stored_at_two_seqs() -> None:
    stored = [msg(1, "m1", A), msg(2, "m2", A), msg(3, "m2", A)]
    res = check([conv_rec("c", "r1", ["a"]), *sends_a(2), read("r1", "c", stored)])
    counts_of(res, duplicated=1)
    assert res.witnesses["duplicated"] == [
        {"where": "store", "conv": "c", "region": "r1", "cid": "m2", "seqs": [2, 3]}]


def test_the_same_cid_from_two_users_is_not_a_duplicate() -> None:
    stored = [msg(1, "x", A), msg(2, "x", B)]
    recs = [conv_rec("c", "r1", ["a", "b"]), *sent(1.0, A, "c", "x", 1),
            *sent(2.0, B, "c", "x", 2), read("r1", "c", stored)]
    counts_of(check(recs))


def test_duplicated_a_cid_acked_under_two_seqs() -> None:
    recs = [conv_rec("c", "r1", ["a"]), *sent(1.0, A, "c", "m1", 1),
            send(2.0, "invoke", A, "c", "m2"), send(2.1, "ok", A, "c", "m2", seq=2),
            send(2.2, "invoke", A, "c", "m2", attempt=2),
            send(2.3, "ok", A, "c", "m2", attempt=2, seq=3),
            read("r1", "c", MSGS[:2])]
    res = check(recs)
    counts_of(res, duplicated=1)
    assert res.witnesses["duplicated"] == [
        {"where": "ack", "conv": "c", "cid": "m2", "seqs": [2, 3]}]
    assert res.sends["invoked"] == 2 and res.sends["acknowledged"] == 2


def test_duplicated_one_seq_delivered_twice_on_one_connection() -> None:
    res = check(base(deliveries=[1, 2, 2, 3]))
    counts_of(res, duplicated=1)
    assert res.witnesses["duplicated"] == [
        {"where": "delivery", "process": B, "conn": 1, "conv": "c", "seq": 2}]


# -- reordered -------------------------------------------------------------------------------


def test_reordered_a_lower_seq_after_a_higher_one_on_a_connection() -> None:
    res = check(base(deliveries=[1, 3, 2]))
    # when 3 arrived, 2 had not: that is a gap as well as the late 2 being out of order
    counts_of(res, reordered=1, gaps=1)
    assert res.witnesses["reordered"] == [
        {"process": B, "conn": 1, "conv": "c", "seq": 2, "after": 3}]
    assert res.witnesses["gaps"] == [
        {"where": "between", "process": B, "conn": 1, "conv": "c", "missing": [2], "before": 3}]


def test_out_of_order_across_connections_is_not_reordered() -> None:
    # conn 1 saw 1..3; conn 2 starts again at 2: a redelivery, not a reorder
    recs = base() + [conn_rec(20.0, "close", B, 1), conn_rec(21.0, "open", B, 2),
                     deliver(22.0, B, 2, "c", 2, "m2", A), deliver(23.0, B, 2, "c", 3, "m3", A)]
    counts_of(check(recs))


# -- gaps ------------------------------------------------------------------------------------


def test_gap_between_two_deliveries_on_a_connection() -> None:
    res = check(base(deliveries=[1, 3]))
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "between", "process": B, "conn": 1, "conv": "c", "missing": [2], "before": 3}]


def test_gap_on_resume_a_new_connection_skips_past_what_was_seen() -> None:
    recs = base(deliveries=[1]) + [
        conn_rec(20.0, "close", B, 1), conn_rec(21.0, "open", B, 2),
        deliver(22.0, B, 2, "c", 3, "m3", A)]
    res = check(recs)
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "resume", "process": B, "conn": 2, "conv": "c", "missing": [2], "before": 3}]


def test_gap_on_the_first_connection_counts_from_seq_zero() -> None:
    res = check(base(deliveries=[2, 3]))
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "resume", "process": B, "conn": 1, "conv": "c", "missing": [1], "before": 2}]


def test_gap_at_the_tail_for_a_device_connected_at_the_end() -> None:
    res = check(base(deliveries=[1]))
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "tail", "process": B, "conv": "c", "missing": [2, 3], "after": 1}]


def test_gap_at_the_tail_for_a_connected_device_that_got_nothing() -> None:
    res = check(base(deliveries=[]))
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "tail", "process": B, "conv": "c", "missing": [1, 2, 3], "after": 0}]


def test_no_tail_gap_for_a_device_that_disconnected() -> None:
    recs = base(deliveries=[1]) + [conn_rec(20.0, "close", B, 1)]
    counts_of(check(recs))


def test_connected_at_end_means_connected_when_the_final_read_began() -> None:
    # the drill closes every connection after the final read: still a tail gap
    closed_after = base(deliveries=[1]) + [phase(99.0, "final-read"),
                                           conn_rec(101.0, "close", B, 1)]
    res = check(closed_after)
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"][0]["where"] == "tail"
    # and a device that connects only after it began is not held to the tail
    late = base(deliveries=[1]) + [conn_rec(20.0, "close", B, 1), phase(99.0, "final-read"),
                                   conn_rec(101.0, "open", B, 2)]
    counts_of(check(late))


def test_no_tail_gap_in_a_conversation_the_device_is_not_in() -> None:
    recs = base(deliveries=[]) + [conn_rec(0.5, "open", "z/1", 1)]
    recs[0] = conv_rec("c", "r1", ["a"])
    counts_of(check(recs))


def test_gap_a_delivered_prev_that_is_not_the_previous_seq() -> None:
    recs = base(deliveries=[1, 3])
    recs.insert(-2, deliver(12.5, B, 1, "c", 2, "m2", A, prev=0))
    recs.sort(key=lambda r: r["t"])
    res = check(recs)
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "prev", "process": B, "conn": 1, "conv": "c", "seq": 2, "prev": 0,
         "expected_prev": 1}]


def test_gap_a_broken_prev_chain_in_a_read() -> None:
    stored = [msg(1, "m1", A), msg(2, "m2", A), msg(3, "m3", A, prev=1)]
    res = check(base(reads={"r1": stored}))
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "read", "conv": "c", "region": "r1", "seq": 3, "prev": 1,
         "expected_prev": 2}]


def test_a_read_that_does_not_start_at_seq_one_breaks_the_chain() -> None:
    res = check([conv_rec("c", "r1", ["a"]), *sent(1.0, A, "c", "m2", 2),
                 read("r1", "c", [msg(2, "m2", A)])])
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"][0]["expected_prev"] == 0


# -- unexpected ------------------------------------------------------------------------------


def test_unexpected_a_stored_message_nobody_sent() -> None:
    stored = [*MSGS[:2], msg(3, "ghost", "z/9")]
    res = check(base(reads={"r1": stored}, deliveries=[1, 2]) + [
        deliver(13.0, B, 1, "c", 3, "ghost", "z/9")])
    counts_of(res, unexpected=1, lost=1)  # and m3, acked at 3, is nowhere
    assert res.witnesses["unexpected"] == [
        {"conv": "c", "region": "r1", "seq": 3, "cid": "ghost", "sender": "z"}]
    assert res.witnesses["lost"][0]["cid"] == "m3"


def test_unexpected_the_right_cid_from_the_wrong_sender() -> None:
    stored = [*MSGS[:2], msg(3, "m3", B)]
    res = check([conv_rec("c", "r1", ["a", "b"]), *sends_a(2),
                 send(3.0, "invoke", A, "c", "m3"), read("r1", "c", stored)])
    counts_of(res, unexpected=1)
    assert res.witnesses["unexpected"] == [
        {"conv": "c", "region": "r1", "seq": 3, "cid": "m3", "sender": "b"}]
    assert res.sends["indeterminate"] == 1  # a's m3 was never stored


# -- divergence ------------------------------------------------------------------------------


def info_only(t: float, process: str, conv: str, cid: str) -> list[Record]:
    return [send(t, "invoke", process, conv, cid), send(t + 0.5, "info", process, conv, cid)]


def test_divergence_two_regions_store_different_messages_at_a_seq() -> None:
    recs = [conv_rec("c", "r1", ["a"]), *sent(1.0, A, "c", "m1", 1),
            *info_only(2.0, A, "c", "x"), *info_only(3.0, A, "c", "y"),
            read("r1", "c", [msg(1, "m1", A), msg(2, "x", A)]),
            read("r2", "c", [msg(1, "m1", A), msg(2, "y", A)])]
    res = check(recs)
    counts_of(res, divergence=1)
    assert res.witnesses["divergence"] == [
        {"conv": "c", "seq": 2, "regions": {"r1": "a:x", "r2": "a:y"}}]
    assert res.sends["recovered"] == 2


def test_divergence_a_seq_present_in_one_region_only() -> None:
    recs = [conv_rec("c", "r1", ["a"]), *sent(1.0, A, "c", "m1", 1),
            *info_only(2.0, A, "c", "x"),
            read("r1", "c", [msg(1, "m1", A)]),
            read("r2", "c", [msg(1, "m1", A), msg(2, "x", A)])]
    res = check(recs)
    counts_of(res, divergence=1)
    assert res.witnesses["divergence"] == [
        {"conv": "c", "seq": 2, "regions": {"r1": None, "r2": "a:x"}}]


def test_divergence_a_cid_stored_under_another_seq_than_its_ok() -> None:
    recs = [conv_rec("c", "r1", ["a"]), *sent(1.0, A, "c", "m1", 5),
            read("r1", "c", [msg(1, "m1", A)])]
    res = check(recs)
    counts_of(res, divergence=1)
    assert res.witnesses["divergence"] == [
        {"where": "acked-seq", "conv": "c", "cid": "m1", "region": "r1", "acked": [5],
         "stored": [1]}]


# -- unread ----------------------------------------------------------------------------------


def test_unread_a_read_that_failed() -> None:
    recs = base(reads={"r1": MSGS}) + [read("r2", "c", [], error="timed out")]
    res = check(recs)
    counts_of(res, unread=1)  # and nothing is lost in r2: it could not be read
    assert res.witnesses["unread"] == [{"conv": "c", "region": "r2", "error": "timed out"}]


def test_when_the_home_read_failed_another_region_is_the_final_history() -> None:
    recs = base(reads={"r2": MSGS}, deliveries=[1]) + [
        read("r1", "c", [], error="unavailable")]
    res = check(recs)
    counts_of(res, unread=1, gaps=1)
    assert res.witnesses["gaps"][0]["missing"] == [2, 3]


# -- not anomalies ---------------------------------------------------------------------------


def test_a_devices_own_messages_are_not_gaps_but_its_users_other_devices_need_them() -> None:
    a1, a2 = "a/1", "a/2"
    stored = [msg(1, "m1", a1), msg(2, "m2", B), msg(3, "m3", a1)]
    recs = [conv_rec("c", "r1", ["a", "b"]),
            conn_rec(0.1, "open", a1, 1), conn_rec(0.2, "open", a2, 1),
            *sent(1.0, a1, "c", "m1", 1), *sent(2.0, B, "c", "m2", 2),
            *sent(3.0, a1, "c", "m3", 3),
            deliver(4.0, a1, 1, "c", 2, "m2", B),
            deliver(4.1, a2, 1, "c", 1, "m1", a1), deliver(4.2, a2, 1, "c", 3, "m3", a1, prev=2),
            read("r1", "c", stored)]
    res = check(recs)
    # a/1 missing its own 1 and 3 is right; a/2 missing b's 2 is not
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"] == [
        {"where": "between", "process": a2, "conn": 1, "conv": "c", "missing": [2], "before": 3}]


def test_own_messages_at_the_tail_and_on_resume_are_not_gaps() -> None:
    stored = [msg(1, "m1", B), msg(2, "m2", A), msg(3, "m3", B), msg(4, "m4", B)]
    recs = [conv_rec("c", "r1", ["a", "b"]), conn_rec(0.1, "open", B, 1),
            *sent(1.0, B, "c", "m1", 1), *sent(2.0, A, "c", "m2", 2),
            *sent(3.0, B, "c", "m3", 3), *sent(4.0, B, "c", "m4", 4),
            deliver(5.0, B, 1, "c", 2, "m2", A), read("r1", "c", stored)]
    counts_of(check(recs))


def test_own_messages_named_by_user_and_from_device_are_own() -> None:
    stored = [{"seq": 1, "prev": 0, "cid": "m1", "from": "b", "from_device": "1"},
              msg(2, "m2", A)]
    recs = [conv_rec("c", "r1", ["a", "b"]), conn_rec(0.1, "open", B, 1),
            *sent(1.0, B, "c", "m1", 1), *sent(2.0, A, "c", "m2", 2),
            deliver(5.0, B, 1, "c", 2, "m2", A), read("r1", "c", stored)]
    counts_of(check(recs))


def test_redelivery_at_the_start_of_a_new_connection_is_fine() -> None:
    recs = base(deliveries=[1, 2]) + [
        conn_rec(20.0, "close", B, 1), conn_rec(21.0, "open", B, 2),
        deliver(22.0, B, 2, "c", 1, "m1", A), deliver(22.1, B, 2, "c", 2, "m2", A),
        deliver(22.2, B, 2, "c", 3, "m3", A)]
    res = check(recs)
    counts_of(res)
    assert res.deliveries == 5


def test_a_connection_that_only_redelivers_does_not_lower_what_was_seen() -> None:
    recs = base() + [
        conn_rec(20.0, "close", B, 1), conn_rec(21.0, "open", B, 2),
        deliver(22.0, B, 2, "c", 1, "m1", A), conn_rec(23.0, "close", B, 2),
        conn_rec(24.0, "open", B, 3), deliver(25.0, B, 3, "c", 3, "m3", A)]
    counts_of(check(recs))


def test_send_outcomes_recovered_indeterminate_failed() -> None:
    stored = [msg(1, "ok", A), msg(2, "info-stored", A)]
    recs = [conv_rec("c", "r1", ["a"]),
            *sent(1.0, A, "c", "ok", 1),
            *info_only(2.0, A, "c", "info-stored"),
            *info_only(3.0, A, "c", "info-lost"),
            send(4.0, "invoke", A, "c", "fail"), send(4.1, "fail", A, "c", "fail"),
            send(5.0, "invoke", A, "c", "no-outcome"),
            send(6.0, "invoke", A, "c", "fail-then-info"),
            send(6.1, "fail", A, "c", "fail-then-info"),
            send(6.2, "invoke", A, "c", "fail-then-info", attempt=2),
            send(6.3, "info", A, "c", "fail-then-info", attempt=2),
            send(7.0, "invoke", A, "c", "info-then-ok"),
            send(7.1, "info", A, "c", "info-then-ok"),
            send(7.2, "invoke", A, "c", "info-then-ok", attempt=2),
            send(7.3, "ok", A, "c", "info-then-ok", attempt=2, seq=3),
            read("r1", "c", [*stored, msg(3, "info-then-ok", A)])]
    res = check(recs)
    counts_of(res)
    assert res.sends == {"invoked": 7, "acknowledged": 2, "failed": 1, "indeterminate": 3,
                         "recovered": 1}
    assert res.recovered == [{"conv": "c", "cid": "info-stored", "sender": A, "seq": 2}]


def test_an_info_send_stored_in_only_one_region_is_recovered_and_divergent() -> None:
    recs = [conv_rec("c", "r1", ["a"]), *info_only(1.0, A, "c", "x"),
            read("r1", "c", []), read("r2", "c", [msg(1, "x", A)])]
    res = check(recs)
    counts_of(res, divergence=1)
    assert res.sends["recovered"] == 1 and res.recovered[0]["seq"] == 1


# -- rules added after review ----------------------------------------------------------------


def test_a_send_that_failed_yet_was_stored_is_unexpected() -> None:
    recs = [conv_rec("c", "r1", ["a"]), send(1.0, "invoke", A, "c", "x"),
            send(1.1, "fail", A, "c", "x", error="forbidden"), read("r1", "c", [msg(1, "x", A)])]
    res = check(recs)
    counts_of(res, unexpected=1)
    assert res.witnesses["unexpected"][0] == {"where": "failed-but-stored", "conv": "c",
                                              "cid": "x", "sender": A}


def test_a_conversation_with_acknowledged_sends_never_read_is_unread() -> None:
    res = check([conv_rec("c", "r1", ["a"]), *sent(1.0, A, "c", "m1", 1)])
    counts_of(res, unread=1)
    assert res.witnesses["unread"][0]["conv"] == "c"


def test_a_delivery_that_is_not_the_stored_message_diverges() -> None:
    recs = base(deliveries=[1, 2])
    recs.append(deliver(13.0, B, 1, "c", 3, "zzz", "x/9"))
    res = check(recs)
    counts_of(res, divergence=1)
    assert res.witnesses["divergence"][0]["where"] == "delivery"


def test_a_delivery_of_a_seq_nobody_stored_diverges() -> None:
    recs = base()
    recs.append(deliver(14.0, B, 1, "c", 4, "m4", A))
    res = check(recs)
    assert res.counts["divergence"] == 1
    assert res.witnesses["divergence"][0]["where"] == "delivered-not-stored"


def test_a_delivery_to_a_non_member_is_unexpected() -> None:
    recs = base()
    recs += [conn_rec(0.5, "open", "eve/1", 1), deliver(11.0, "eve/1", 1, "c", 1, "m1", A)]
    res = check(recs)
    assert res.counts["unexpected"] == 1
    assert res.witnesses["unexpected"][0] == {"where": "non-member", "process": "eve/1",
                                              "conv": "c", "seq": 1}


def test_a_device_with_one_connection_still_open_is_connected_at_the_end() -> None:
    recs = base(deliveries=[1, 2])
    recs += [conn_rec(5.0, "open", B, 2), conn_rec(6.0, "close", B, 1)]
    res = check(recs)
    counts_of(res, gaps=1)
    assert res.witnesses["gaps"][0]["where"] == "tail"


def test_a_message_the_device_had_on_an_earlier_connection_is_no_gap() -> None:
    recs = base()
    recs += [conn_rec(20.0, "open", B, 2), deliver(21.0, B, 2, "c", 1, "m1", A),
             deliver(22.0, B, 2, "c", 3, "m3", A)]
    counts_of(check(recs))


# -- availability, convergence, lag ----------------------------------------------------------


SHARES = ("during_faults_local", "during_faults_remote", "during_faults_sends",
          "outside_faults", "outside_faults_sends")


def shares(av: dict[str, Any]) -> dict[str, Any]:
    return {k: av[k] for k in SHARES}


def test_availability_splits_fault_window_sends_by_home_and_region() -> None:
    h1, h2 = "h1", "h2"  # homed in r1 and r2
    recs = [conv_rec(h1, "r1", ["a", "b"]), conv_rec(h2, "r2", ["a", "b"]),
            *sent(5.0, A, h1, "out-quick", 1, ack_after=0.1),
            nemesis(10.0, "start", "n1"),
            *sent(10.0, A, h1, "local-quick", 2, ack_after=1.0),  # at the edges: counts
            *sent(13.0, A, h1, "local-slow", 3, ack_after=2.0),
            *sent(14.0, A, h2, "remote-quick", 1, ack_after=0.2),
            *info_only(15.0, A, h2, "remote-info"),
            # first invoked inside the window; the retry that was acked is outside
            send(19.0, "invoke", A, h2, "remote-retry"),
            send(19.5, "info", A, h2, "remote-retry"),
            send(21.0, "invoke", A, h2, "remote-retry", attempt=2),
            send(21.2, "ok", A, h2, "remote-retry", attempt=2, seq=2),
            *sent(16.0, B, h2, "b-local", 3, region="r2", ack_after=0.3),
            nemesis(20.0, "stop", "n1"),
            send(25.0, "invoke", A, h1, "out-fail"), send(25.1, "fail", A, h1, "out-fail")]
    av = check(recs).availability
    assert set(av) == {"r1", "r2"}
    assert shares(av["r1"]) == {
        "during_faults_local": 0.5, "during_faults_remote": 0.3333, "during_faults_sends": 5,
        "outside_faults": 0.5, "outside_faults_sends": 2}
    assert shares(av["r2"]) == {
        "during_faults_local": 1.0, "during_faults_remote": None, "during_faults_sends": 1,
        "outside_faults": None, "outside_faults_sends": 0}


def test_availability_ack_within_is_a_parameter() -> None:
    recs = [conv_rec("c", "r1", ["a"]), nemesis(0.0, "start", "n"),
            *sent(1.0, A, "c", "m1", 1, ack_after=2.0), nemesis(9.0, "stop", "n")]
    assert check(recs).availability["r1"]["during_faults_local"] == 0.0
    assert check(recs, ack_within=3.0).availability["r1"]["during_faults_local"] == 1.0


def test_availability_a_fault_never_stopped_lasts_to_the_end() -> None:
    recs = [conv_rec("c", "r2", ["a"]), nemesis(1.0, "start", "n"),
            *sent(50.0, A, "c", "m1", 1), phase(60.0, "end")]
    av = check(recs).availability["r1"]
    assert av["during_faults_remote"] == 1.0 and av["during_faults_sends"] == 1
    assert av["outside_faults"] is None


def test_availability_counts_from_when_the_send_was_queued() -> None:
    # queued (the user pressed send) inside the window, invoked after it: a send during
    # the fault, and 1.5 s from queued to ok is too slow even though the invoke got it in 0.1
    recs = [conv_rec("c", "r1", ["a"]), nemesis(0.0, "start", "n"), nemesis(5.0, "stop", "n"),
            {**send(6.0, "invoke", A, "c", "m1"), "queued": 4.6},
            send(6.1, "ok", A, "c", "m1", seq=1)]
    av = check(recs).availability["r1"]
    assert shares(av) == {"during_faults_local": 0.0, "during_faults_remote": None,
                          "during_faults_sends": 1, "outside_faults": None,
                          "outside_faults_sends": 0}


def test_ack_latency_percentiles_outside_faults() -> None:
    # acked outside faults in 10, 20, ... 100 ms; a slow one during a fault is not counted,
    # nor is one never acked; a retried one counts from its first invoke
    recs = [conv_rec("c", "r1", ["a"])]
    for i in range(1, 10):
        recs += sent(float(i), A, "c", f"m{i}", i, ack_after=i / 100)
    recs += [send(10.0, "invoke", A, "c", "retried"), send(10.05, "info", A, "c", "retried"),
             send(10.06, "invoke", A, "c", "retried", attempt=2),
             send(10.1, "ok", A, "c", "retried", attempt=2, seq=10),
             send(11.0, "invoke", A, "c", "never"),
             nemesis(20.0, "start", "n"), *sent(21.0, A, "c", "slow", 11, ack_after=9.0),
             nemesis(40.0, "stop", "n")]
    av = check(recs).availability["r1"]
    assert av["outside_faults_sends"] == 11 and av["during_faults_sends"] == 1
    assert (av["outside_faults_p50_ms"], av["outside_faults_p99_ms"]) == (60, 100)
    assert check([]).availability == {}
    none = check([*info_only(1.0, A, "c", "x")]).availability["r1"]
    assert (none["outside_faults_p50_ms"], none["outside_faults_p99_ms"]) == (None, None)


def test_converge_seconds_from_the_last_converged_phase() -> None:
    assert check([phase(1.0, "steady"), phase(2.0, "converge")]).converge_s is None
    recs = [phase(1.0, "converged", 3.5), phase(9.0, "heal"), phase(10.0, "converged", 4.25)]
    assert check(recs).converge_s == 4.25


def test_peak_lag_is_the_max_per_link() -> None:
    recs = [lag(1.0, "r1", "r2", 10), lag(2.0, "r1", "r2", 250), lag(3.0, "r1", "r2", 30),
            lag(1.5, "r2", "r1", 5), lag(2.5, "r2", "r1", None, stalled=True),
            lag(4.0, "r3", "r1", None)]
    assert check(recs).peak_lag_ms == {"r1->r2": 250, "r2->r1": 5}


# -- a simulated correct system --------------------------------------------------------------

REGIONS = ("r1", "r2", "r3")
OUTCOMES = ("ok", "ok", "ok", "retry-ok", "info-stored", "info-lost", "fail", "pending")
ACTIONS = ("send", "send", "deliver", "deliver", "deliver", "close", "open")


@dataclass
class _Device:
    process: str
    region: str
    connected: bool = False
    conn: int = 0
    cursor: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # next index
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # past last deliv.

    @property
    def user(self) -> str:
        return self.process.split("/", 1)[0]


@dataclass
class Sim:
    records: list[Record]
    sends: dict[str, int]
    regions: list[str]


class _World:
    def __init__(self, regions: list[str], devices: list[_Device],
                 convs: dict[str, tuple[str, list[str]]]) -> None:
        self.regions, self.devices, self.convs = regions, devices, convs
        self.stored: dict[str, list[dict[str, Any]]] = {c: [] for c in convs}
        self.records: list[Record] = []
        self.sends = {"invoked": 0, "acknowledged": 0, "failed": 0, "indeterminate": 0,
                      "recovered": 0}
        self.t = 0.0
        self.cids = 0

    def add(self, kind: str, **fields: Any) -> None:
        self.t = round(self.t + 0.05, 4)
        self.records.append({"kind": kind, "t": self.t, **fields})

    def member_convs(self, d: _Device) -> list[str]:
        return [c for c, (_, members) in self.convs.items() if d.user in members]

    def pending(self, d: _Device, conv: str) -> int | None:
        """Index of the next message d should get in conv on this connection, if any."""
        msgs = self.stored[conv]
        return next((i for i in range(d.cursor[conv], len(msgs))
                     if msgs[i]["from"] != d.process), None)

    def deliverable(self, d: _Device) -> list[str]:
        if not d.connected:
            return []
        return [c for c in self.member_convs(d) if self.pending(d, c) is not None]

    def send(self, d: _Device, conv: str, outcome: str) -> None:
        self.cids += 1
        cid = f"k{self.cids}"
        base_ = {"process": d.process, "region": d.region, "conv": conv, "cid": cid}
        self.add("send", type="invoke", attempt=1, **base_)
        self.sends["invoked"] += 1
        stored = outcome in ("ok", "retry-ok", "info-stored")
        seq = len(self.stored[conv]) + 1
        if stored:
            self.stored[conv].append(msg(seq, cid, d.process))
        if outcome == "retry-ok":
            self.add("send", type="info", attempt=1, error="timeout", **base_)
            self.add("send", type="invoke", attempt=2, **base_)
        if outcome in ("ok", "retry-ok"):
            self.add("send", type="ok", attempt=1 + (outcome == "retry-ok"), seq=seq,
                     prev=seq - 1, **base_)
            self.sends["acknowledged"] += 1
        elif outcome in ("info-stored", "info-lost"):
            self.add("send", type="info", attempt=1, error="unavailable", **base_)
            self.sends["recovered" if stored else "indeterminate"] += 1
        elif outcome == "fail":
            self.add("send", type="fail", attempt=1, error="refused", **base_)
            self.sends["failed"] += 1
        else:  # pending: no outcome before the drill ended
            self.sends["indeterminate"] += 1

    def deliver(self, d: _Device, conv: str) -> None:
        i = self.pending(d, conv)
        assert i is not None
        m = self.stored[conv][i]
        self.add("deliver", process=d.process, region=d.region, conn=d.conn, conv=conv,
                 seq=m["seq"], prev=m["prev"], cid=m["cid"], **{"from": m["from"]})
        d.cursor[conv] = i + 1
        d.seen[conv] = max(d.seen[conv], i + 1)

    def open(self, d: _Device, back: dict[str, int]) -> None:
        """A new connection resuming each conversation up to back[conv] messages early."""
        d.conn += 1
        d.connected = True
        for c in self.convs:
            d.cursor[c] = max(0, d.seen[c] - back.get(c, 0))
        self.add("conn", type="open", process=d.process, region=d.region, conn=d.conn)

    def close(self, d: _Device) -> None:
        d.connected = False
        self.add("conn", type="close", process=d.process, region=d.region, conn=d.conn,
                 reason="dropped")

    def flush(self, d: _Device) -> None:
        for c in self.member_convs(d):
            while self.pending(d, c) is not None:
                self.deliver(d, c)


class _Script:
    """Choices read from one drawn byte string: a single draw per history keeps generation
    fast, and shrinking the bytes (shorter, smaller) shrinks the history (fewer steps, the
    first option at each)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1] if self.at <= len(self.data) else 0

    def pick(self, xs: Sequence[T]) -> T:
        return xs[self.byte() % len(xs)]

    def back(self, convs: Sequence[str]) -> dict[str, int]:
        """How many already-seen messages a new connection redelivers, per conversation."""
        return {c: self.byte() % 4 for c in convs}

    @property
    def done(self) -> bool:
        return self.at >= len(self.data)


@st.composite
def correct_histories(draw: st.DrawFn, min_steps: int = 0, max_steps: int = 40) -> Sim:
    regions = list(REGIONS[: draw(st.integers(1, 3))])
    users = [f"u{u}" for u in range(draw(st.integers(2, 4)))]
    n_convs = draw(st.integers(1, 3))
    size = draw(st.integers(4 * min_steps, 4 * max_steps))  # st.binary favours short
    script = _Script(draw(st.binary(min_size=size, max_size=size)))
    devices = [_Device(f"{user}/d{dev}", script.pick(regions))
               for user in users for dev in range(1 + script.byte() % 2)]
    convs: dict[str, tuple[str, list[str]]] = {}
    for c in range(n_convs):
        members = [u for u in users if script.byte() % 3]  # each user in 2/3 of them
        convs[f"c{c}"] = (script.pick(regions), members or [script.pick(users)])
    w = _World(regions, devices, convs)
    for c, (home, members) in convs.items():
        w.add("conv", conv=c, home=home, members=members)
    for d in devices:
        if script.byte() % 4:
            w.open(d, {})
    fault = sorted((script.byte(), script.byte())) if script.byte() % 2 else None

    step = 0
    while not script.done:
        if fault and step == fault[0]:
            w.add("nemesis", type="start", id="n1", fault="partition")
        if fault and step == fault[1]:
            w.add("nemesis", type="stop", id="n1", fault="partition")
        step += 1
        can = {"send": True,
               "deliver": any(w.deliverable(d) for d in devices),
               "close": any(d.connected for d in devices),
               "open": any(not d.connected for d in devices)}
        action = script.pick([a for a in ACTIONS if can[a]])
        if action == "send":
            conv = script.pick(list(convs))
            senders = [d for d in devices if d.user in convs[conv][1]]
            w.send(script.pick(senders), conv, script.pick(OUTCOMES))
        elif action == "deliver":
            d = script.pick([d for d in devices if w.deliverable(d)])
            w.deliver(d, script.pick(w.deliverable(d)))
        elif action == "close":
            w.close(script.pick([d for d in devices if d.connected]))
        else:
            w.open(script.pick([d for d in devices if not d.connected]), script.back(list(convs)))

    # the end: a device still connected has everything; a disconnected one may come back
    for d in devices:
        if not d.connected and draw(st.booleans()):
            w.open(d, script.back(list(convs)))
        if d.connected:
            w.flush(d)
    w.add("phase", name="converged", seconds=1.5)
    w.add("phase", name="final-read")
    for c in convs:
        for region in regions:
            w.add("read", region=region, conv=c, msgs=[dict(m) for m in w.stored[c]], error=None)
    for d in devices:  # as the drill does after the final read, or not
        if d.connected and draw(st.booleans()):
            w.close(d)
    w.add("phase", name="steady-after")
    return Sim(w.records, w.sends, regions)


def clone(records: list[Record]) -> list[Record]:
    """A copy to mutate (records are flat but for a read's msgs)."""
    return [{**r, "msgs": [dict(m) for m in r["msgs"]]} if r["kind"] == "read" else dict(r)
            for r in records]


def groups(records: list[Record]) -> list[list[int]]:
    """Indexes of the deliveries on each (process, conn, conv), in order."""
    out: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r["kind"] == "deliver":
            out[(r["process"], r["conn"], r["conv"])].append(i)
    return list(out.values())


@PROPS
@given(correct_histories())
def test_a_correct_system_checks_valid(sim: Sim) -> None:
    res = check(sim.records)
    assert res.counts == {a: 0 for a in ANOMALIES}, res.witnesses
    assert res.valid and res.witnesses == {}
    assert res.sends == sim.sends
    assert res.deliveries == sum(r["kind"] == "deliver" for r in sim.records)
    assert res.converge_s == 1.5


@PROPS
@given(correct_histories(min_steps=20), st.data())
def test_dropping_an_acked_message_from_one_read_is_lost(sim: Sim, data: st.DataObject) -> None:
    acked = sorted({(r["conv"], r["cid"]) for r in sim.records
                    if r["kind"] == "send" and r["type"] == "ok"})
    assume(acked)
    conv, cid = data.draw(st.sampled_from(acked))
    region = data.draw(st.sampled_from(sim.regions))
    recs = clone(sim.records)
    for r in recs:
        if r["kind"] == "read" and (r["conv"], r["region"]) == (conv, region):
            r["msgs"] = [m for m in r["msgs"] if m["cid"] != cid]
    res = check(recs)
    assert not res.valid and res.counts["lost"] == 1
    assert {k: res.witnesses["lost"][0][k] for k in ("conv", "cid", "region")} == {
        "conv": conv, "cid": cid, "region": region}


@PROPS
@given(correct_histories(min_steps=20), st.data())
def test_swapping_two_deliveries_on_a_connection_is_reordered(
        sim: Sim, data: st.DataObject) -> None:
    candidates = [g for g in groups(sim.records) if len(g) >= 2]
    assume(candidates)
    g = data.draw(st.sampled_from(candidates))
    i, j = sorted(data.draw(st.lists(st.sampled_from(g), min_size=2, max_size=2, unique=True)))
    recs = clone(sim.records)
    for k in ("seq", "prev", "cid", "from"):
        recs[i][k], recs[j][k] = recs[j][k], recs[i][k]
    res = check(recs)
    assert not res.valid and res.counts["reordered"] >= 1
    w = res.witnesses["reordered"][0]
    assert (w["process"], w["conn"], w["conv"]) == (
        recs[i]["process"], recs[i]["conn"], recs[i]["conv"])


@PROPS
@given(correct_histories(min_steps=20), st.data())
def test_deleting_a_delivery_inside_a_connection_is_a_gap(
        sim: Sim, data: st.DataObject) -> None:
    # a delivery the device got only once (a redelivered one it already had is no gap)
    times = defaultdict(int)
    for r in sim.records:
        if r["kind"] == "deliver":
            times[(r["process"], r["conv"], r["seq"])] += 1
    inner = [k for g in groups(sim.records) if len(g) >= 3 for k in g[1:-1]
             if times[(sim.records[k]["process"], sim.records[k]["conv"],
                       sim.records[k]["seq"])] == 1]
    assume(inner)
    k = data.draw(st.sampled_from(inner))
    recs = clone(sim.records)
    gone = recs.pop(k)
    res = check(recs)
    assert not res.valid and res.counts["gaps"] >= 1
    assert any(w.get("process") == gone["process"] and gone["seq"] in w.get("missing", [])
               for w in res.witnesses["gaps"])


@PROPS
@given(correct_histories(min_steps=20), st.data())
def test_a_delivery_repeated_on_its_connection_is_duplicated(
        sim: Sim, data: st.DataObject) -> None:
    candidates = groups(sim.records)
    assume(candidates)
    g = data.draw(st.sampled_from(candidates))
    k = data.draw(st.sampled_from(g))
    after = data.draw(st.sampled_from([x for x in g if x >= k]))  # put the copy after this
    recs = clone(sim.records)
    recs.insert(after + 1, {**recs[k], "t": recs[after]["t"]})
    res = check(recs)
    assert not res.valid and res.counts["duplicated"] == 1
    assert res.witnesses["duplicated"] == [
        {"where": "delivery", "process": recs[k]["process"], "conn": recs[k]["conn"],
         "conv": recs[k]["conv"], "seq": recs[k]["seq"]}]


@PROPS
@given(correct_histories(), st.data())
def test_a_stored_message_nobody_sent_is_unexpected(sim: Sim, data: st.DataObject) -> None:
    reads = [i for i, r in enumerate(sim.records) if r["kind"] == "read"]
    k = data.draw(st.sampled_from(reads))
    recs = clone(sim.records)
    msgs = recs[k]["msgs"]
    last = msgs[-1]["seq"] if msgs else 0
    msgs.append(msg(last + 1, "ghost", "nobody/d0"))
    res = check(recs)
    assert not res.valid and res.counts["unexpected"] == 1
    assert res.witnesses["unexpected"] == [
        {"conv": recs[k]["conv"], "region": recs[k]["region"], "seq": last + 1,
         "cid": "ghost", "sender": "nobody"}]


# -- the simulator itself --------------------------------------------------------------------


def test_the_simulator_is_not_vacuous() -> None:
    """The histories above have deliveries, reconnects with redelivery, and connections
    long enough to mutate."""
    seen = {"deliveries": 0, "reconnects": 0, "redeliveries": 0, "late-resumes": 0,
            "long-connections": 0, "recovered": 0, "three-regions": 0}

    @settings(max_examples=100, deadline=None, database=None)
    @given(correct_histories())
    def collect(sim: Sim) -> None:
        recs = sim.records
        seen["deliveries"] += any(r["kind"] == "deliver" for r in recs)
        seen["reconnects"] += any(r["kind"] == "conn" and r["conn"] > 1 for r in recs)
        per_device: dict[tuple[str, str], list[int]] = defaultdict(list)
        for r in recs:
            if r["kind"] == "deliver":
                per_device[(r["process"], r["conv"])].append(r["seq"])
        seen["redeliveries"] += any(len(set(v)) < len(v) for v in per_device.values())
        first = {}  # (process, conn, conv) -> its first delivered seq
        for r in recs:
            if r["kind"] == "deliver":
                first.setdefault((r["process"], r["conn"], r["conv"]), r["seq"])
        seen["late-resumes"] += any(k[1] > 1 and seq > 1 for k, seq in first.items())
        seen["long-connections"] += any(len(g) >= 3 for g in groups(recs))
        seen["recovered"] += sim.sends["recovered"] > 0
        seen["three-regions"] += len(sim.regions) == 3

    collect()
    assert all(n > 0 for n in seen.values()), seen


# -- region failover: messages moved to a new epoch ------------------------------------------

E1 = 1 << 40


def moved_history(*, name_first_seq: bool = True) -> list[Record]:
    """a/1 got m3 acked as seq 3 by the old home during a split; the new home held up to 2,
    took m4 as E1+1, and reconciliation stored m3 again as E1+2 (moved from 3). b/1 was
    delivered 3 before the heal and E1+1, E1+2 after."""
    m3 = msg(E1 + 2, "m3", A, prev=E1 + 1)
    if name_first_seq:
        m3["moved_from"] = 3
    final = [msg(1, "m1", A), msg(2, "m2", A), msg(E1 + 1, "m4", A, prev=2), m3]
    out = [conv_rec("c", "r1", ["a", "b"]), conn_rec(0.5, "open", B, 1)]
    out += sends_a(3)
    out += sent(5.0, A, "c", "m4", E1 + 1)
    out[-1]["prev"] = 2
    out += [deliver(10.0 + s, B, 1, "c", s, f"m{s}", A) for s in (1, 2, 3)]
    out += [deliver(20.0, B, 1, "c", E1 + 1, "m4", A, prev=2),
            deliver(21.0, B, 1, "c", E1 + 2, "m3", A, prev=E1 + 1)]
    out += [read(region, "c", final) for region in ("r1", "r2")]
    return out


def test_a_message_moved_by_a_failover_is_neither_lost_nor_divergent() -> None:
    counts_of(check(moved_history()))


def test_a_moved_message_that_does_not_name_its_first_seq_is_divergence() -> None:
    res = check(moved_history(name_first_seq=False))
    assert res.counts["divergence"] >= 1 and not res.valid


def test_an_orphan_whose_retry_the_new_home_took_is_not_divergence() -> None:
    # m3 was acked as 3 by the old home but its sender timed out and retried, and the new
    # home took the retry as E1+2 (acked so): reconciliation keeps that copy only
    recs = [r for r in moved_history(name_first_seq=False) if not (
        r["kind"] == "send" and r.get("cid") == "m3" and r["type"] == "ok")]
    recs.insert(-2, send(6.0, "ok", A, "c", "m3", seq=E1 + 2, prev=E1 + 1))
    counts_of(check(recs))
