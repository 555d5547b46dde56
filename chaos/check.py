"""The drill checker: a history in, counts and witnesses out (pure; no I/O, no clock).

In the manner of Jepsen's checkers. What counts as what:

- **lost**: a send acknowledged (``ok``) whose cid is missing from a region's final
  read of its conversation. One witness per (cid, region).
- **duplicated**: one (sender, cid) stored under two seqs in a region's read; a
  cid acknowledged under two different seqs; or one seq delivered twice on one
  connection.
- **reordered**: on one connection, a conversation's seq lower than one that came
  before it.
- **gaps**: a device missed a message it should have had: between two deliveries
  on one connection, before the first delivery of a connection (after what the
  device had already seen), or after its last delivery while it stayed connected
  until the final read (phase ``final-read``), a message of the final history
  that is not the device's own; a
  delivered ``prev`` that is not the seq before it in the final history; and a
  final read whose ``prev`` chain is broken.
- **unexpected**: a stored message that no client ever sent (no invoke of that
  sender and cid in that conversation), a stored message whose every attempt
  ``fail``-ed, and a delivery to a device whose user is not a member.
- **divergence**: regions that disagree on a conversation at a seq (different
  message, or present in one and absent in another), a cid stored under a seq
  other than the one its ``ok`` named, and a delivery that is not what the final
  history holds at its seq.
- **unread**: a region whose final read of a conversation failed, or a
  conversation with acknowledged sends that was never read (nothing can be said
  of it, so the history is not valid).
- **moved** (not an anomaly): after a region failover, a message the old home
  acknowledged during a split is stored again in the new epoch, naming its first seq
  in ``moved_from``. Its ``ok`` seq matches that, and a delivery of the first seq
  (before the heal) is of the message that moved; so is the delivery of an old-epoch
  seq whose sender and cid the final history holds in a later epoch (a retry the new
  home took before the move).
- **recovered** (not an anomaly): sends never acknowledged (only ``info``) that
  were stored after all; **indeterminate**: such sends that were not.

The gap rules assume what the drill runner does: every device opens its first
session before the conversations it is in get their first message (a device
that joins later starts at the head, by the protocol, and would show gaps).

``valid`` is true only when lost, duplicated, reordered, gaps, unexpected,
divergence and unread are all empty. Availability per region: the share of
sends made while a fault was in force (from ``queued``, when the user pressed
send, else the first invoke) acknowledged within ``ack_within`` seconds of it,
split by whether the conversation is homed in the sender's region, beside the
same share outside the faults.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos.history import Record

ANOMALIES = ("lost", "duplicated", "reordered", "gaps", "unexpected", "divergence", "unread")
WITNESSES = 20  # witnesses kept per anomaly (the counts are complete)
FINAL_READ = "final-read"  # the phase at which the drill reads every region one last time
EPOCH_BITS = 40  # a seq is epoch << 40 | counter (runtime.core.sequencing)


@dataclass
class Result:
    valid: bool
    counts: dict[str, int]
    witnesses: dict[str, list[dict[str, Any]]]
    sends: dict[str, int]
    deliveries: int
    availability: dict[str, dict[str, Any]]
    converge_s: float | None
    peak_lag_ms: dict[str, int]
    recovered: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "counts": self.counts, "witnesses": self.witnesses,
                "sends": self.sends, "deliveries": self.deliveries,
                "availability": self.availability, "converge_s": self.converge_s,
                "peak_lag_ms": self.peak_lag_ms, "recovered": self.recovered}


class _Anomalies:
    def __init__(self) -> None:
        self.counts = {a: 0 for a in ANOMALIES}
        self.witnesses: dict[str, list[dict[str, Any]]] = {a: [] for a in ANOMALIES}

    def add(self, kind: str, **witness: Any) -> None:
        self.counts[kind] += 1
        if len(self.witnesses[kind]) < WITNESSES:
            self.witnesses[kind].append(witness)


@dataclass
class _Send:
    conv: str
    cid: str
    process: str
    region: str
    first: float
    oks: list[tuple[int, float]] = field(default_factory=list)
    infos: int = 0
    fails: int = 0

    @property
    def user(self) -> str:
        return self.process.split("/", 1)[0]


def _sends(records: Iterable[Record]) -> dict[tuple[str, str, str], _Send]:
    """Per (conv, sender user, cid): the first invoke and every outcome."""
    out: dict[tuple[str, str, str], _Send] = {}
    for r in records:
        if r["kind"] != "send":
            continue
        user = r["process"].split("/", 1)[0]
        key = (r["conv"], user, r["cid"])
        s = out.get(key)
        if s is None:  # from when the user pressed send, where the history says
            s = out[key] = _Send(r["conv"], r["cid"], r["process"], r["region"],
                                 float(r.get("queued", r["t"])))
        if r["type"] == "ok":
            s.oks.append((int(r["seq"]), r["t"]))
        elif r["type"] == "info":
            s.infos += 1
        elif r["type"] == "fail":
            s.fails += 1
    return out


def _sender(msg: dict[str, Any]) -> tuple[str, str]:
    """(user, device) of a stored message: ``from`` may be "user/device" or a user id."""
    frm = str(msg.get("from", ""))
    if "/" in frm:
        user, device = frm.split("/", 1)
        return user, device
    return frm, str(msg.get("from_device", ""))


def check(records: list[Record], *, ack_within: float = 1.0) -> Result:
    a = _Anomalies()
    sends = _sends(records)
    convs = {r["conv"]: r for r in records if r["kind"] == "conv"}
    reads: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)  # conv -> region
    for r in records:
        if r["kind"] != "read":
            continue
        if r.get("error"):
            a.add("unread", conv=r["conv"], region=r["region"], error=r["error"])
        else:
            reads[r["conv"]][r["region"]] = list(r.get("msgs") or [])
    regions = sorted({r["region"] for r in records if r["kind"] == "read"})

    # -- what each region stored -------------------------------------------------------
    final: dict[str, dict[int, dict[str, Any]]] = {}  # conv -> seq -> msg (authoritative)
    for conv, by_region in reads.items():
        home = convs.get(conv, {}).get("home")
        source = by_region.get(home) if home in by_region else next(iter(by_region.values()))
        final[conv] = {int(m["seq"]): m for m in source}
        for region, msgs in by_region.items():
            prev = 0
            seen: dict[tuple[str, str], int] = {}
            for m in msgs:
                seq = int(m["seq"])
                if int(m.get("prev", prev)) != prev:
                    a.add("gaps", where="read", conv=conv, region=region, seq=seq,
                          prev=m.get("prev"), expected_prev=prev)
                prev = seq
                key = (_sender(m)[0], str(m.get("cid")))
                if key in seen:
                    a.add("duplicated", where="store", conv=conv, region=region, cid=key[1],
                          seqs=[seen[key], seq])
                else:
                    seen[key] = seq
                if (conv, key[0], key[1]) not in sends:
                    a.add("unexpected", conv=conv, region=region, seq=seq, cid=key[1],
                          sender=key[0])
        # regions must agree seq by seq
        all_seqs = sorted({int(m["seq"]) for msgs in by_region.values() for m in msgs})
        index = {region: {int(m["seq"]): m for m in msgs} for region, msgs in by_region.items()}
        for seq in all_seqs:
            versions = {region: (_sender(idx[seq])[0], idx[seq].get("cid"))
                        if seq in idx else None for region, idx in index.items()}
            if len(set(versions.values())) > 1:
                a.add("divergence", conv=conv, seq=seq,
                      regions={r: (f"{v[0]}:{v[1]}" if v else None)
                               for r, v in versions.items()})

    # -- acknowledged sends --------------------------------------------------------------
    acked_convs = {conv for (conv, _, _), s in sends.items() if s.oks}
    read_convs = {r["conv"] for r in records if r["kind"] == "read"}
    for conv in sorted(acked_convs - read_convs):
        a.add("unread", conv=conv, region=None, error="never read")
    counts = {"invoked": len(sends), "acknowledged": 0, "failed": 0, "indeterminate": 0,
              "recovered": 0}
    recovered: list[dict[str, Any]] = []
    for (conv, user, cid), s in sends.items():
        stored = {region: [int(m["seq"]) for m in msgs
                           if str(m.get("cid")) == cid and _sender(m)[0] == user]
                  for region, msgs in reads.get(conv, {}).items()}
        # the seqs it was first acknowledged under, when a failover moved it
        first = {region: {int(m["moved_from"]) for m in msgs if m.get("moved_from")
                          and str(m.get("cid")) == cid and _sender(m)[0] == user}
                 for region, msgs in reads.get(conv, {}).items()}
        if s.oks:
            counts["acknowledged"] += 1
            acked = {seq for seq, _ in s.oks}
            if len(acked) > 1:
                a.add("duplicated", where="ack", conv=conv, cid=cid, seqs=sorted(acked))
            for region in regions:
                if region not in reads.get(conv, {}):
                    continue  # unread: counted already
                if not stored.get(region):
                    a.add("lost", conv=conv, cid=cid, sender=s.process,
                          seq=min(acked), region=region)
                elif not (set(stored[region]) | first[region]) & acked:
                    a.add("divergence", where="acked-seq", conv=conv, cid=cid, region=region,
                          acked=sorted(acked), stored=stored[region])
        elif any(stored.values()) and s.fails and not s.infos:
            counts["failed"] += 1
            a.add("unexpected", where="failed-but-stored", conv=conv, cid=cid,
                  sender=s.process)
        elif any(stored.values()):
            counts["recovered"] += 1
            if len(recovered) < WITNESSES:
                recovered.append({"conv": conv, "cid": cid, "sender": s.process,
                                  "seq": min(min(v) for v in stored.values() if v)})
        elif s.fails and not s.infos:
            counts["failed"] += 1
        else:
            counts["indeterminate"] += 1

    # -- deliveries ------------------------------------------------------------------------
    deliveries = [r for r in records if r["kind"] == "deliver"]
    by_process: dict[str, list[Record]] = defaultdict(list)
    for r in deliveries:
        by_process[r["process"]].append(r)
    open_at_end = _connected_at_end(records)
    for process, recs in by_process.items():
        _check_device(process, recs, final, convs, a, connected=process in open_at_end)
    for process in open_at_end - set(by_process):  # connected to the end, got nothing
        _check_device(process, [], final, convs, a, connected=True)

    valid = all(a.counts[k] == 0 for k in ANOMALIES)
    return Result(valid, a.counts, {k: v for k, v in a.witnesses.items() if v}, counts,
                  len(deliveries), _availability(records, sends, convs, ack_within),
                  _converge(records), _peak_lag(records), recovered)


def _connected_at_end(records: list[Record]) -> set[str]:
    """Devices with a connection open when the final read began (the drill closes them
    after it)."""
    open_conns: dict[str, set[int]] = defaultdict(set)
    for r in records:
        if r["kind"] == "phase" and r.get("name") == FINAL_READ:
            break
        if r["kind"] == "conn":
            if r["type"] == "open":
                open_conns[r["process"]].add(int(r["conn"]))
            else:
                open_conns[r["process"]].discard(int(r["conn"]))
    return {p for p, conns in open_conns.items() if conns}


def _check_device(process: str, recs: list[Record], final: dict[str, dict[int, dict[str, Any]]],
                  convs: dict[str, Record], a: _Anomalies, *, connected: bool) -> None:
    user, _, device = process.partition("/")

    def own(m: dict[str, Any]) -> bool:
        return _sender(m) == (user, device)

    seen: dict[str, set[int]] = defaultdict(set)  # conv -> every seq the device got

    def missing_between(conv: str, lo: int, hi: int) -> list[int]:
        return [s for s, m in final.get(conv, {}).items()
                if lo < s < hi and not own(m) and s not in seen[conv]]

    members_of = {conv: set(info.get("members", [])) for conv, info in convs.items()}
    moved = {conv: {int(m["moved_from"]): m for m in hist.values() if m.get("moved_from")}
             for conv, hist in final.items()}
    stored_at = {conv: {(_sender(m)[0], str(m.get("cid"))): s for s, m in hist.items()}
                 for conv, hist in final.items()}
    seen_max: dict[str, int] = defaultdict(int)  # conv -> highest seq seen on any connection
    by_conn: dict[tuple[int, str], list[Record]] = defaultdict(list)
    for r in recs:
        by_conn[(int(r["conn"]), r["conv"])].append(r)
    for (conn, conv), items in sorted(by_conn.items(), key=lambda kv: kv[1][0]["t"]):
        seqs: set[int] = set()
        last = 0
        for i, r in enumerate(items):
            seq, prev = int(r["seq"]), int(r["prev"])
            if seq in seqs:
                a.add("duplicated", where="delivery", process=process, conn=conn, conv=conv,
                      seq=seq)
                continue
            seqs.add(seq)
            if conv in members_of and user not in members_of[conv]:
                a.add("unexpected", where="non-member", process=process, conv=conv, seq=seq)
            stored = final.get(conv)
            key = (str(r.get("from", "")).split("/", 1)[0], str(r.get("cid")))
            was = moved.get(conv, {}).get(seq)
            later = stored_at.get(conv, {}).get(key)
            if stored and seq not in stored and (
                    (was is not None and (_sender(was)[0], str(was.get("cid"))) == key)
                    or (later is not None and later >> EPOCH_BITS > seq >> EPOCH_BITS)):
                # delivered under the seq it had before a failover moved it (or before its
                # sender's retry was taken by the new home, which keeps that copy)
                continue
            if stored and seq not in stored:
                a.add("divergence", where="delivered-not-stored", process=process, conn=conn,
                      conv=conv, seq=seq, cid=r.get("cid"))
            elif stored and (_sender(stored[seq])[0], str(stored[seq].get("cid"))) != (
                    str(r.get("from", "")).split("/", 1)[0], str(r.get("cid"))):
                a.add("divergence", where="delivery", process=process, conn=conn, conv=conv,
                      seq=seq, delivered=r.get("cid"), stored=stored[seq].get("cid"))
            if seq < last:
                a.add("reordered", process=process, conn=conn, conv=conv, seq=seq, after=last)
                continue
            hist = final.get(conv, {})
            if hist:
                before = max((s for s in hist if s < seq), default=0)
                if prev != before:
                    a.add("gaps", where="prev", process=process, conn=conn, conv=conv, seq=seq,
                          prev=prev, expected_prev=before)
            floor = last if i else seen_max[conv]
            missed = missing_between(conv, floor, seq) if seq > floor else []
            if missed:
                a.add("gaps", where="between" if i else "resume", process=process, conn=conn,
                      conv=conv, missing=missed[:10], before=seq)
            last = seq
        seen[conv] |= seqs
        seen_max[conv] = max(seen_max[conv], last)
    if not connected:
        return
    for conv, info in convs.items():
        if user not in info.get("members", []):
            continue
        tail = missing_between(conv, seen_max[conv], 1 << 62)
        if tail:
            a.add("gaps", where="tail", process=process, conv=conv, missing=tail[:10],
                  after=seen_max[conv])


def _fault_windows(records: list[Record]) -> list[tuple[float, float]]:
    starts: dict[str, float] = {}
    out: list[tuple[float, float]] = []
    end = max((r["t"] for r in records), default=0.0)
    for r in records:
        if r["kind"] != "nemesis":
            continue
        if r["type"] == "start":
            starts[r["id"]] = r["t"]
        elif r["id"] in starts:
            out.append((starts.pop(r["id"]), r["t"]))
    out += [(t, end) for t in starts.values()]
    return out


def _availability(records: list[Record], sends: dict[tuple[str, str, str], _Send],
                  convs: dict[str, Record], ack_within: float) -> dict[str, dict[str, Any]]:
    windows = _fault_windows(records)

    def during(t: float) -> bool:
        return any(lo <= t <= hi for lo, hi in windows)

    tally: dict[str, dict[str, list[int]]] = defaultdict(
        lambda: {"local": [0, 0], "remote": [0, 0], "outside": [0, 0]})
    latency: dict[str, list[float]] = defaultdict(list)  # outside faults, acknowledged
    for s in sends.values():
        took = min((t - s.first for _, t in s.oks), default=None)
        quick = took is not None and took <= ack_within
        if during(s.first):
            home = convs.get(s.conv, {}).get("home")
            bucket = "local" if home == s.region else "remote"
        else:
            bucket = "outside"
            if took is not None:
                latency[s.region].append(took)
        tally[s.region][bucket][0] += int(quick)
        tally[s.region][bucket][1] += 1

    def share(pair: list[int]) -> float | None:
        return round(pair[0] / pair[1], 4) if pair[1] else None

    def pct(values: list[float], q: float) -> int | None:
        if not values:
            return None
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000)

    return {region: {"during_faults_local": share(t["local"]),
                     "during_faults_remote": share(t["remote"]),
                     "during_faults_sends": t["local"][1] + t["remote"][1],
                     "outside_faults": share(t["outside"]),
                     "outside_faults_sends": t["outside"][1],
                     "outside_faults_p50_ms": pct(latency[region], 0.5),
                     "outside_faults_p99_ms": pct(latency[region], 0.99)}
            for region, t in sorted(tally.items())}


def _converge(records: list[Record]) -> float | None:
    for r in reversed(records):
        if r["kind"] == "phase" and r.get("name") == "converged":
            return r.get("seconds")
    return None


def _peak_lag(records: list[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r["kind"] == "lag" and r.get("lag_ms") is not None:
            key = f"{r['source']}->{r['target']}"
            out[key] = max(out.get(key, 0), int(r["lag_ms"]))
    return out
