"""PresenceTracker: sessions and heartbeats in, online/offline changes out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.presence import Change, PresenceState, PresenceTracker

PROPS = settings(max_examples=200, deadline=None)
TTL, GRACE = 60.0, 5.0


def tracker() -> PresenceTracker:
    return PresenceTracker(ttl=TTL, grace=GRACE)


def states(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.state.user, c.state.state) for c in changes]


# -- connect / disconnect / grace --------------------------------------------------------------


def test_online_on_connect_for_watchers():
    p = tracker()
    assert p.watch("w1", ["alice"]) == [PresenceState("alice", False, 0.0)]
    changes = p.connect("alice", "s1", 100.0)
    assert changes == [Change(PresenceState("alice", True, 100.0), frozenset({"w1"}))]
    assert changes[0].state.state == "online"
    assert p.is_online("alice")


def test_second_session_emits_nothing():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 1.0)
    assert p.connect("alice", "s2", 2.0) == []
    assert p.state("alice").last_active == 2.0


def test_offline_only_after_grace_once_the_last_session_ends():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    p.connect("alice", "s2", 0.0)
    p.disconnect("alice", "s1", 10.0)
    assert p.tick(12.0) == []
    assert p.disconnect("alice", "s2", 20.0) == []  # offline is never immediate
    assert p.is_online("alice")
    assert p.tick(20.0) == []
    assert p.tick(24.9) == []
    assert p.is_online("alice")
    changes = p.tick(25.0)
    assert states(changes) == [("alice", "offline")]
    assert changes[0].watchers == frozenset({"w"})
    assert changes[0].state.last_active == 20.0
    assert not p.is_online("alice")
    assert p.tick(30.0) == []  # emitted once


def test_reconnect_within_grace_does_not_flap():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    p.disconnect("alice", "s1", 10.0)
    assert p.connect("alice", "s2", 12.0) == []  # still online: no change at all
    assert p.tick(16.0) == []  # the old grace deadline is gone
    assert p.tick(50.0) == []
    assert p.is_online("alice")


def test_reconnect_after_offline_emits_online_again():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    p.disconnect("alice", "s1", 1.0)
    assert states(p.tick(6.0)) == [("alice", "offline")]
    assert states(p.connect("alice", "s1", 7.0)) == [("alice", "online")]


def test_disconnect_of_unknown_session_is_harmless():
    p = tracker()
    p.watch("w", ["alice"])
    assert p.disconnect("alice", "nope", 1.0) == []
    p.connect("alice", "s1", 2.0)
    assert p.disconnect("alice", "other", 3.0) == []
    q = tracker()
    q.connect("alice", "s1", 2.0)
    q.disconnect("alice", "other", 3.0)
    assert q.tick(10.0) == [] and q.is_online("alice")  # s1 is alive: no grace started


def test_double_disconnect_does_not_extend_grace():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    p.disconnect("alice", "s1", 1.0)
    p.disconnect("alice", "s1", 4.0)
    assert states(p.tick(6.0)) == [("alice", "offline")]


# -- TTL and heartbeats ----------------------------------------------------------------------


def test_silent_session_expires_after_ttl_then_grace():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    assert p.tick(59.0) == []
    assert p.tick(61.0) == []  # the session expired at 60: grace runs to 65
    assert p.is_online("alice")
    changes = p.tick(65.0)
    assert states(changes) == [("alice", "offline")]


def test_tick_long_after_expiry_goes_offline_at_once():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    assert states(p.tick(1000.0)) == [("alice", "offline")]


def test_heartbeat_keeps_a_session_alive():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    t = 0.0
    while t < 600:
        t += TTL / 2
        p.heartbeat("alice", "s1", t)
        assert p.tick(t + 1) == []
    assert p.is_online("alice")
    assert p.state("alice").last_active == t


def test_heartbeat_of_unknown_or_ended_session_does_not_revive():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    p.heartbeat("alice", "s2", 30.0)  # not a session of alice
    p.heartbeat("bob", "s1", 30.0)
    assert p.tick(61.0) == []
    p.heartbeat("alice", "s1", 62.0)  # s1 already expired
    assert states(p.tick(65.0)) == [("alice", "offline")]
    assert p.state("bob") == PresenceState("bob", False, 0.0)


def test_one_session_alive_keeps_user_online_while_another_expires():
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "quiet", 0.0)
    p.connect("alice", "busy", 0.0)
    for t in range(10, 200, 10):
        p.heartbeat("alice", "busy", float(t))
        assert p.tick(float(t)) == []
    assert p.is_online("alice")


def test_sessions_expiring_in_one_tick_grace_counts_from_the_last_end():
    """Two silent sessions expire in the same (late) tick.

    s1 was last seen at 10 (expires at 70), s2 at 1 (expires at 61): the last session
    ended at 70, so the user may go offline at 75 at the earliest.
    """
    p = tracker()
    p.watch("w", ["alice"])
    p.connect("alice", "s1", 0.0)
    p.connect("alice", "s2", 1.0)
    p.heartbeat("alice", "s1", 10.0)
    assert p.tick(72.0) == [], "offline 2 s after the last session ended, grace is 5 s"
    assert p.is_online("alice")
    assert states(p.tick(75.0)) == [("alice", "offline")]


def test_has_session_follows_connect_disconnect_and_expiry():
    p = tracker()
    assert not p.has_session("alice", "s1")
    p.connect("alice", "s1", 0.0)
    p.connect("alice", "s2", 0.0)
    assert p.has_session("alice", "s1") and p.has_session("alice", "s2")
    assert not p.has_session("bob", "s1")
    p.disconnect("alice", "s1", 1.0)
    assert not p.has_session("alice", "s1") and p.has_session("alice", "s2")
    p.tick(100.0)  # s2 went silent past the TTL
    assert not p.has_session("alice", "s2")
    assert not p.has_session("carol", "x")  # asking creates nothing
    assert p.next_deadline() is None


def test_next_deadline():
    p = tracker()
    assert p.next_deadline() is None
    p.connect("alice", "s1", 0.0)
    p.connect("bob", "s2", 10.0)
    assert p.next_deadline() == TTL  # alice's session expiry
    p.heartbeat("alice", "s1", 20.0)
    assert p.next_deadline() == 10.0 + TTL
    p.disconnect("bob", "s2", 30.0)
    assert p.next_deadline() == 30.0 + GRACE  # bob's grace ends first
    p.tick(35.0)
    assert p.next_deadline() == 20.0 + TTL
    p.disconnect("alice", "s1", 40.0)
    assert p.next_deadline() == 40.0 + GRACE
    p.tick(45.0)
    assert p.next_deadline() is None


def test_nothing_happens_before_next_deadline_and_something_just_after():
    p = tracker()
    p.watch("w", ["alice", "bob"])
    p.connect("alice", "s1", 0.0)
    p.connect("bob", "s2", 3.0)
    p.disconnect("bob", "s2", 4.0)
    seen = []
    while (deadline := p.next_deadline()) is not None:
        assert p.tick(deadline - 1e-6) == []
        seen.extend(states(p.tick(deadline + 1e-6)))
    assert seen == [("bob", "offline"), ("alice", "offline")]


# -- watching (lazy) -------------------------------------------------------------------------


def test_no_change_when_nobody_watches_but_state_is_tracked():
    p = tracker()
    assert p.connect("alice", "s1", 0.0) == []
    assert p.is_online("alice")
    p.disconnect("alice", "s1", 1.0)
    assert p.tick(10.0) == []
    assert not p.is_online("alice")
    assert p.watch("w", ["alice"]) == [PresenceState("alice", False, 1.0)]


def test_watch_returns_current_states_in_order_without_duplicates():
    p = tracker()
    p.connect("bob", "s1", 5.0)
    got = p.watch("w", ["bob", "carol", "bob"])
    assert got == [PresenceState("bob", True, 5.0), PresenceState("carol", False, 0.0)]
    assert p.watched() == {"bob", "carol"}


def test_watch_replaces_the_watch_set():
    p = tracker()
    p.watch("w", ["alice"])
    p.watch("w", ["bob"])
    assert p.watched() == {"bob"}
    assert p.connect("alice", "s1", 0.0) == []
    assert states(p.connect("bob", "s2", 0.0)) == [("bob", "online")]


def test_change_goes_to_every_watcher_of_the_user():
    p = tracker()
    p.watch("w1", ["alice"])
    p.watch("w2", ["alice", "bob"])
    p.watch("w3", ["bob"])
    changes = p.connect("alice", "s1", 0.0)
    assert [c.watchers for c in changes] == [frozenset({"w1", "w2"})]


def test_unwatch_removes_the_watcher():
    p = tracker()
    p.watch("w1", ["alice"])
    p.watch("w2", ["alice"])
    p.unwatch("w1")
    assert [c.watchers for c in p.connect("alice", "s1", 0.0)] == [frozenset({"w2"})]
    p.unwatch("w2")
    assert p.watched() == set()
    p.unwatch("never-watched")  # harmless
    p.disconnect("alice", "s1", 1.0)
    assert p.tick(10.0) == []


def test_disconnect_of_the_watching_session_removes_its_watch():
    p = tracker()
    p.connect("bob", "bob-s", 0.0)
    p.watch("bob-s", ["alice"])
    p.disconnect("bob", "bob-s", 1.0)
    assert p.watched() == set()
    assert p.connect("alice", "a", 2.0) == []


def test_ttl_expiry_of_the_watching_session_removes_its_watch():
    p = tracker()
    p.connect("bob", "bob-s", 0.0)
    p.watch("bob-s", ["alice"])
    p.tick(100.0)
    assert p.watched() == set()


def test_grace_expiry_for_unwatched_user_is_silent_and_later_watch_sees_offline():
    p = tracker()
    p.connect("alice", "s1", 0.0)
    p.disconnect("alice", "s1", 1.0)
    p.watch("w", ["alice"])
    p.unwatch("w")
    assert p.tick(100.0) == []
    assert p.watch("w", ["alice"])[0].online is False


# -- random operations -----------------------------------------------------------------------

USERS = ["u0", "u1", "u2"]
SESSIONS = ["s0", "s1", "s2"]
op_st = st.tuples(
    st.sampled_from(["connect", "connect", "disconnect", "heartbeat", "heartbeat", "tick"]),
    st.sampled_from(USERS), st.sampled_from(SESSIONS),
    # time advance: mostly small steps, so that sessions expire around ticks
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 6.0, 12.0, 25.0]) | st.floats(0, 40, allow_nan=False),
)
PARAMS = st.sampled_from([(30.0, 5.0), (10.0, 0.0), (5.0, 20.0)])


@PROPS
@given(st.lists(op_st, max_size=60), PARAMS)
def test_random_ops_changes_alternate_and_match_state(ops, params):
    ttl, grace = params
    p = PresenceTracker(ttl=ttl, grace=grace)
    watchers = {"w-all": USERS, "w-u0": ["u0"]}
    for w, users in watchers.items():
        assert [s.online for s in p.watch(w, users)] == [False] * len(users)
    last = {u: "offline" for u in USERS}
    alive: dict[tuple[str, str], float] = {}  # the model: (user, session) -> last seen
    now = 0.0
    for op, user, sess, dt in ops:
        now += dt
        session = f"{user}/{sess}"  # session ids are unique per user
        if op == "connect":
            changes = p.connect(user, session, now)
            alive[(user, session)] = now
        elif op == "disconnect":
            changes = p.disconnect(user, session, now)
            alive.pop((user, session), None)
        elif op == "heartbeat":
            p.heartbeat(user, session, now)
            if (user, session) in alive and now - alive[(user, session)] <= ttl:
                alive[(user, session)] = now
            changes = []
        else:
            alive = {k: seen for k, seen in alive.items() if now - seen <= ttl}
            changes = p.tick(now)
        if op in ("disconnect", "heartbeat"):
            assert changes == [], "offline is never immediate"
        for c in changes:
            u = c.state.user
            assert c.watchers == frozenset(w for w, us in watchers.items() if u in us)
            # per user, changes alternate: never two onlines or two offlines in a row
            assert c.state.state != last[u], f"{u} {c.state.state} twice in a row"
            last[u] = c.state.state
            assert c.state.online == p.is_online(u)
            assert c.state.online == (op == "connect"), "online on connect, offline on tick"
            if not c.state.online:
                assert not any(key[0] == u for key in alive), "offline with a live session"
        for u in USERS:
            if any(key[0] == u for key in alive):
                assert p.is_online(u), f"{u} has a live session but is offline"
            assert p.is_online(u) == (last[u] == "online"), "a change was not emitted"
            assert p.state(u).online == p.is_online(u)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=4),  # last heard of each session
    st.lists(st.integers(0, 40), min_size=1, max_size=4),  # tick times after the last beat
    PARAMS,
)
def test_offline_never_before_grace_after_the_last_session_ends(heard, ticks, params):
    """Sessions connected in one order and last heard from in another, expired by late ticks.

    Whole seconds only, so the model has no rounding of its own.
    """
    ttl, grace = params
    p = PresenceTracker(ttl=ttl, grace=grace)
    p.watch("w", ["u"])
    for i in range(len(heard)):
        p.connect("u", f"s{i}", 0.0)
    for t, i in sorted((float(t), i) for i, t in enumerate(heard)):
        p.heartbeat("u", f"s{i}", t)
    last_end = max(heard) + ttl  # the last session is alive while now - seen <= ttl
    for dt in sorted(ticks):
        # ticks spread over the expiry and grace window (exact binary fractions)
        now = max(heard) + float(dt) * (ttl + grace) / 20
        changes = p.tick(now)
        should_be_online = now <= last_end or now < last_end + grace
        if changes:
            assert states(changes) == [("u", "offline")]
            assert not should_be_online, (
                f"offline at {now}, the last session ended at {last_end}, grace {grace}")
        assert p.is_online("u") == should_be_online


# -- several regions -----------------------------------------------------------------------------


def test_online_in_another_region_is_online_here():
    p = tracker()
    p.watch("w1", ["alice"])
    changes = p.remote("eu", PresenceState("alice", True, 50.0))
    assert states(changes) == [("alice", "online")] and p.is_online("alice")
    assert p.state("alice").last_active == 50.0
    # a local session on top changes nothing for the watchers
    assert p.connect("alice", "s1", 100.0) == []
    assert p.disconnect("alice", "s1", 101.0) == []
    assert p.tick(101.0 + GRACE) == []  # still online over there
    changes = p.remote("eu", PresenceState("alice", False, 120.0))
    assert states(changes) == [("alice", "offline")]
    assert changes[0].state.last_active == 120.0


def test_local_flips_are_exported_watched_or_not():
    p = PresenceTracker(ttl=TTL, grace=GRACE, export=True)
    p.connect("bob", "s1", 10.0)
    p.disconnect("bob", "s1", 11.0)
    p.tick(11.0 + GRACE)
    assert [(s.user, s.online) for s in p.outbox] == [("bob", True), ("bob", False)]
    q = tracker()  # without export nothing piles up
    q.connect("bob", "s1", 10.0)
    assert q.outbox == []


def test_a_region_repeating_itself_emits_nothing():
    p = tracker()
    p.watch("w1", ["carol"])
    assert states(p.remote("ap", PresenceState("carol", True, 5.0))) == [("carol", "online")]
    assert p.remote("ap", PresenceState("carol", True, 6.0)) == []
    assert p.remote("eu", PresenceState("carol", False, 7.0)) == []  # ap still says online


@PROPS
@given(st.lists(st.tuples(st.sampled_from(["local", "eu", "ap"]), st.booleans()),
                max_size=30))
def test_merged_state_is_online_iff_some_region_says_so(ops):
    p = tracker()
    p.watch("w", ["u"])
    now, seen_online = 0.0, False
    sessions: list[str] = []
    verdict = {"local": False}
    for where, online in ops:
        now += 1.0
        if where == "local" and online:
            sessions.append(f"s{len(sessions)}-{now}")
            changes = p.connect("u", sessions[-1], now)
        elif where == "local":
            changes = [c for s in sessions for c in p.disconnect("u", s, now)]
            sessions.clear()
            now += GRACE
            changes += p.tick(now)
        else:
            changes = p.remote(where, PresenceState("u", online, now))
        verdict[where] = online
        for c in changes:  # each change flips what the watcher sees
            assert c.state.online != seen_online
            seen_online = c.state.online
        assert p.is_online("u") == seen_online == any(verdict.values())
