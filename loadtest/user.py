"""The Locust side: a User that speaks the msgctl client protocol, and the profile's shape.

Only Locust processes import this module (it monkey-patches through Locust/gevent); the
settings come from `loadtest.config.from_env()` (written by `msgctl load run`).

Each user is one device of one load user (`load-<run>-u<n>`). It connects with a JWT
minted from the deployment's secret, keeps a reader greenlet and a ticker greenlet (acks,
keepalive pings, order re-checks) per connection, creates its conversations (idempotent,
deterministic ids), then loops: send a message (timestamped body) and wait for `sent`,
now and then read a page of history with `sync`, and run the profile's behaviour (storm,
offline periods, presence churn). Requests fired (request_type "WS"):

  connect          handshake until `hello`
  create           create -> created
  send->sent       send -> sent (durable)
  send->delivered  the sender's timestamp in the body -> `msg` at this receiver (live only)
  sync             sync -> batch
  catch-up         reconnect -> every conversation paged up to date with sync
  watch            watch -> first presence reply
  order            a violation of per-conversation order (always a failure)
  connection       an unexpected close (always a failure)
  error            an error frame that answers no request (always a failure)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust import LoadTestShape, User, events, task
from locust.runners import MasterRunner

from loadtest import config as config_mod
from loadtest.model import ConvSpec, IndexPool, OrderTracker, Plan, decode_body, encode_body, now_ms
from loadtest.shape import Timeline
from msgctl import wire
from msgctl.home import Home
from runtime import auth

log = logging.getLogger("loadtest")

CFG = config_mod.from_env()
PROFILE = CFG.load_profile()
DRAIN_S = 4.0 if CFG.workers > 1 else 1.5  # users stop and report before the run ends
TIMELINE = Timeline(PROFILE, drain=DRAIN_S)
PLAN = Plan(CFG.run, TIMELINE.peak, PROFILE.conversations)
SECRET = Home(Path(CFG.home)).secret()
TOKEN_TTL = int(PROFILE.duration) + 3600
SYNC_PAGE = 200
COUNTERS: Counter[str] = Counter()


class ConnectFailed(Exception):
    pass


class ConnectionLost(Exception):
    pass


class ReplyTimeout(Exception):
    pass


class ErrorFrame(Exception):
    pass


class OrderViolation(Exception):
    pass


def fire(name: str, ms: float, length: int = 0, exc: Exception | None = None) -> None:
    events.request.fire(request_type="WS", name=name, response_time=ms,
                        response_length=length, exception=exc, context={})


# -- per-process state: the run clock, user slots, devices --------------------------

@dataclass
class Device:
    """One (user, device) identity; outlives the Locust users that drive it."""

    slot: int
    user_id: str
    device_id: str
    convs: list[ConvSpec]
    tracker: OrderTracker = field(default_factory=OrderTracker)
    acked: dict[str, int] = field(default_factory=dict)
    retry: dict[str, dict[str, Any]] = field(default_factory=dict)  # cid -> send frame
    created: bool = False


class _Process:
    t0 = time.time()  # the run's start on this process (reset at test_start)
    pool: IndexPool | None = None
    devices: dict[int, Device] = {}

    @classmethod
    def device(cls, environment: Any) -> Device:
        if cls.pool is None:
            index = getattr(environment.runner, "worker_index", 0) or 0
            cls.pool = IndexPool(index, CFG.workers)
        slot = cls.pool.acquire()
        dev = cls.devices.get(slot)
        if dev is None:
            n = PLAN.population
            dev = cls.devices[slot] = Device(slot, PLAN.user_id(slot), f"d{slot // n}",
                                             PLAN.conversations(slot))
        return dev

    @classmethod
    def release(cls, dev: Device) -> None:
        if cls.pool is not None:
            cls.pool.release(dev.slot)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    _Process.t0 = time.time()


def _write_counters(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner) or not _Process.devices:
        return
    data = dict(COUNTERS)
    data["duplicates"] = sum(d.tracker.duplicates for d in _Process.devices.values())
    data["unverified_holes"] = sum(d.tracker.open_holes() for d in _Process.devices.values())
    data["devices"] = len(_Process.devices)
    path = Path(CFG.out) / f"counters-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


events.test_stop.add_listener(_write_counters)
events.quitting.add_listener(_write_counters)


# -- one connection --------------------------------------------------------------------

class Session:
    def __init__(self, owner: MsgctlUser, ws: websocket.WebSocket, hello: dict[str, Any],
                 opened_ms: float) -> None:
        self.owner = owner
        self.ws = ws
        self.hello = hello
        self.opened_ms = opened_ms
        self.pending: dict[str, AsyncResult] = {}
        self.alive = True
        self.closing = False
        self.last_send = time.monotonic()
        self.heartbeat = max(float(hello.get("heartbeat_ms") or 30000) / 1000.0, 1.0)
        self.reader = gevent.spawn(self._read)
        self.ticker = gevent.spawn(self._tick)

    def send(self, frame: dict[str, Any]) -> None:
        if not self.alive:
            raise ConnectionLost("not connected")
        try:
            self.ws.send(wire.encode_compact(frame))
        except (websocket.WebSocketException, OSError) as exc:
            raise ConnectionLost(f"send failed: {exc}") from None
        self.last_send = time.monotonic()

    def request(self, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        rid = wire.next_id()
        result = AsyncResult()
        self.pending[rid] = result
        try:
            self.send({**frame, "id": rid})
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise ReplyTimeout(f"no reply to {frame['t']} within {timeout:g}s") from None
        finally:
            self.pending.pop(rid, None)

    def _read(self) -> None:
        lost: Exception | None = None
        try:
            while True:
                opcode, frame = self.ws.recv_data_frame(False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    data = frame.data or b""
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    reason = data[2:].decode("utf-8", "replace")
                    lost = ConnectionLost(f"closed by the server: {code} {reason}".strip())
                    break
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                try:
                    msg = wire.decode(frame.data)
                except ValueError:
                    fire("error", 0, exc=ErrorFrame("a frame that is not JSON"))
                    continue
                if not isinstance(msg, dict):
                    continue
                try:
                    self.owner.on_frame(self, msg)
                except Exception:  # a bug here must not look like a lost connection
                    log.exception("handling %s", msg.get("t"))
                fid = msg.get("id")
                if fid is not None:
                    waiter = self.pending.pop(fid, None)
                    if waiter is not None:
                        waiter.set(msg)
        except gevent.GreenletExit:
            self._end(ConnectionLost("closed by the client"))
            raise
        except Exception as exc:  # socket errors, protocol errors from the library
            lost = ConnectionLost(f"connection lost: {type(exc).__name__}: {exc}".rstrip(": "))
        self._end(lost or ConnectionLost("connection closed"))
        if not self.closing:
            self.owner.on_lost(self, lost or ConnectionLost("connection closed"))

    def _end(self, exc: Exception) -> None:
        self.alive = False
        for waiter in list(self.pending.values()):
            if not waiter.ready():
                waiter.set_exception(exc)
        self.pending.clear()

    def _tick(self) -> None:
        while self.alive and not self.closing:
            gevent.sleep(0.5)
            try:
                self.owner.flush_acks(self)
                if time.monotonic() - self.last_send > self.heartbeat / 3:
                    self.send({"t": "ping"})
            except ConnectionLost:
                return
            self.owner.report(self.owner.device.tracker.check())

    def close(self, abrupt: bool = False) -> None:
        self.closing = True
        self.ticker.kill(block=False)
        if abrupt:  # like a network loss: no close handshake
            sock = self.ws.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.reader.kill()
            self.ws.shutdown()
        else:
            self.reader.kill()  # then ws.close() reads the server's close frame itself
            try:
                self.ws.close(timeout=2)
            except Exception:  # closing is best effort
                self.ws.shutdown()
        self._end(ConnectionLost("closed by the client"))


# -- the user ----------------------------------------------------------------------------

class MsgctlUser(User):
    """A device that chats following the profile; see the module docstring."""

    def wait_time(self) -> float:
        lo, hi = PROFILE.think_time
        wait = self.rng.uniform(lo, hi)
        nxt = self._next_event()
        if nxt is not None:
            wait = min(wait, max(nxt - time.time(), 0.0))
        return wait

    # -- life cycle --------------------------------------------------------------------
    def on_start(self) -> None:
        self.rng = random.Random()
        self.device = _Process.device(self.environment)
        self.session: Session | None = None
        self.backoff = 0.2
        now = time.time()
        self.storms_done: set[float] = set()
        if PROFILE.storm:
            for at in PROFILE.storm.at:
                if _Process.t0 + at < now + 0.5:
                    self.storms_done.add(at)  # started after it: not part of that storm
        self.next_offline: float | None = None
        off = PROFILE.offline
        if off and random.Random(f"{CFG.run}/{self.device.slot}/offline").random() < off.fraction:
            self.next_offline = now + off.every * self.rng.uniform(0.5, 1.5)
        self.next_churn: float | None = None
        if PROFILE.churn:
            self.next_churn = now + self.rng.uniform(*PROFILE.churn.online)
        if self._connect():
            self._after_connect()

    def on_stop(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(ConnectionLost):
                self.flush_acks(session)
            session.close()
        tracker = self.device.tracker
        for cid in list(tracker.sending):
            # killed while waiting for `sent`: the next user on this device retries it
            tracker.send_unknown(cid)
        violations, _ = tracker.finish()
        self.report(violations)
        _Process.release(self.device)

    @task
    def step(self) -> None:
        event = self._due_event(time.time())
        if event is not None:
            event()
            return
        if self.session is None or not self.session.alive:
            self._reconnect()
            return
        if not self.device.created:
            self._create_conversations()
            return
        if self.device.retry:
            self._retry_send()
            return
        if PROFILE.sync_ratio and self.rng.random() < PROFILE.sync_ratio:
            self._history_sync()
            return
        self._send_message()

    # -- connecting --------------------------------------------------------------------
    def _connect(self) -> bool:
        dev = self.device
        token = auth.issue(SECRET, dev.user_id, dev.device_id, TOKEN_TTL)
        opened = now_ms()
        t0 = time.perf_counter()
        try:
            ws, raw, hello = wire.open_sync(CFG.ws_url, token, timeout=10,
                                            skip_utf8_validation=True)
        except Exception as exc:  # open_sync shut the socket it opened
            fire("connect", (time.perf_counter() - t0) * 1000, exc=_connect_error(exc))
            return False
        ws.settimeout(None)
        fire("connect", (time.perf_counter() - t0) * 1000, len(raw))
        COUNTERS["connects"] += 1
        dev.tracker.new_connection()
        self.session = Session(self, ws, hello, opened)
        return True

    def _after_connect(self) -> None:
        if not self.device.created:
            self._create_conversations()
        if PROFILE.churn and PROFILE.churn.watch:
            self._watch()

    def _reconnect(self) -> None:
        if self.session is not None:
            self.session.close(abrupt=True)
            self.session = None
        gevent.sleep(self.rng.uniform(0, self.backoff))
        if self._connect():
            self.backoff = 0.2
            COUNTERS["reconnects"] += 1
            self._after_connect()
        else:
            self.backoff = min(self.backoff * 2, 5.0)

    def on_lost(self, session: Session, exc: Exception) -> None:
        """The server or the network closed a connection we did not close."""
        fire("connection", 0, exc=exc)
        COUNTERS["connections_lost"] += 1

    # -- requests ----------------------------------------------------------------------
    def _request(self, name: str, frame: dict[str, Any], timeout: float,
                 ok: str) -> dict[str, Any] | None:
        """A request whose reply is timed under `name`; None (and a failure) if it failed."""
        if self.session is None:
            return None
        t0 = time.perf_counter()
        try:
            reply = self.session.request(frame, timeout)
        except (ReplyTimeout, ConnectionLost) as exc:
            fire(name, (time.perf_counter() - t0) * 1000, exc=exc)
            return None
        ms = (time.perf_counter() - t0) * 1000
        if reply.get("t") != ok:
            fire(name, ms, exc=_error_of(reply))
            return None
        fire(name, ms, len(json.dumps(reply)) if name != "create" else 0)
        return reply

    def _create_conversations(self) -> None:
        dev = self.device
        for conv in dev.convs:
            members = [PLAN.user_id(m) for m in conv.members]
            frame = {"t": "create", "conv": conv.id, "members": members}
            if self._request("create", frame, PROFILE.send_timeout, "created") is None:
                return  # tried again on the next step
        dev.created = True

    def _pick_conv(self) -> ConvSpec | None:
        convs = self.device.convs
        direct = [c for c in convs if c.kind == "direct"]
        groups = [c for c in convs if c.kind == "group"]
        wd = PROFILE.conversations.mix_direct if direct else 0.0
        wg = PROFILE.conversations.mix_group if groups else 0.0
        if wd + wg <= 0:
            return self.rng.choice(convs) if convs else None
        return self.rng.choice(direct if self.rng.random() * (wd + wg) < wd else groups)

    def _pick_size(self) -> int:
        sizes = PROFILE.message_sizes
        return self.rng.choices([s for s, _ in sizes], [w for _, w in sizes])[0]

    def _send_message(self) -> None:
        conv = self._pick_conv()
        if conv is None or self.session is None:
            return
        cid = uuid.uuid4().hex
        body = encode_body(now_ms(), self._pick_size())
        frame = {"t": "send", "conv": conv.id, "cid": cid, "kind": "text", "body": body}
        self._send(frame, timed=True)

    def _retry_send(self) -> None:
        cid, frame = next(iter(self.device.retry.items()))
        COUNTERS["send_retries"] += 1
        self._send(frame, timed=False)

    def _send(self, frame: dict[str, Any], timed: bool) -> None:
        assert self.session is not None
        dev, cid = self.device, frame["cid"]
        dev.tracker.send_started(frame["conv"], cid)
        t0 = time.perf_counter()
        reply = None
        try:
            reply = self.session.request(frame, PROFILE.send_timeout)
        except (ReplyTimeout, ConnectionLost) as exc:
            if timed:
                fire("send->sent", (time.perf_counter() - t0) * 1000, exc=exc)
        finally:
            if reply is None:  # timed out, lost, or this user was stopped: retry the cid
                dev.tracker.send_unknown(cid)
                dev.retry[cid] = frame
        if reply is None:
            return
        ms = (time.perf_counter() - t0) * 1000
        if reply.get("t") == "sent":
            dev.retry.pop(cid, None)
            if timed:
                fire("send->sent", ms, len(frame["body"]))
            return
        # an error reply: not stored, unless the server failed in an unknown state
        if reply.get("code") != "internal":
            dev.retry.pop(cid, None)
            self.report(dev.tracker.send_not_stored(cid))
        if timed:
            fire("send->sent", ms, exc=_error_of(reply))

    def _sync_page(self, conv: str, after: int, limit: int) -> dict[str, Any] | None:
        return self._request("sync", {"t": "sync", "conv": conv, "after": after,
                                      "limit": limit}, PROFILE.send_timeout, "batch")

    def _history_sync(self) -> None:
        if not self.device.convs:
            return
        conv = self.rng.choice(self.device.convs).id
        head = self.device.tracker.head(conv) or 0
        self._sync_page(conv, max(head - 20, 0), 20)

    def _catch_up(self, started: float) -> None:
        """Page every conversation from this device's chain head to the end."""
        fetched = 0
        for conv in self.device.convs:
            after = self.device.tracker.head(conv.id) or 0
            for _ in range(100):
                batch = self._sync_page(conv.id, after, SYNC_PAGE)
                if batch is None:
                    return
                msgs = batch.get("msgs") or []
                fetched += len(msgs)
                if not batch.get("more") or not msgs:
                    break
                after = msgs[-1]["seq"]
        fire("catch-up", (time.perf_counter() - started) * 1000, fetched)
        COUNTERS["catch_ups"] += 1

    def _watch(self) -> None:
        users = PLAN.watch_list(self.device.slot, PROFILE.churn.watch if PROFILE.churn else 0)
        if users:
            self._request("watch", {"t": "watch", "users": users}, PROFILE.send_timeout,
                          "presence")

    # -- frames from the server (reader greenlet) ------------------------------------
    def on_frame(self, session: Session, f: dict[str, Any]) -> None:
        t = f.get("t")
        tracker = self.device.tracker
        if t == "msg":
            conv, seq, prev = f.get("conv"), f.get("seq"), f.get("prev")
            if not (isinstance(conv, str) and isinstance(seq, int) and isinstance(prev, int)):
                fire("error", 0, exc=ErrorFrame(f"malformed msg frame: {str(f)[:120]}"))
                return
            new, violations = tracker.on_msg(conv, seq, prev)
            self.report(violations)
            if not new:
                return
            COUNTERS["delivered"] += 1
            sent_at = decode_body(f.get("body"))
            if sent_at is None:
                return
            if sent_at >= session.opened_ms:
                COUNTERS["delivered_live"] += 1
                fire("send->delivered", max(now_ms() - sent_at, 0.0), len(f.get("body", "")))
            else:
                COUNTERS["delivered_resumed"] += 1
        elif t == "sent":
            cid = f.get("cid")
            first = cid in tracker.sending or cid in tracker.unknown
            self.report(tracker.on_sent(f["conv"], cid, f["seq"], f["prev"]))
            if first:
                COUNTERS["sent"] += 1
        elif t == "batch":
            msgs = [(m["seq"], m["prev"]) for m in f.get("msgs") or []]
            new, violations = tracker.on_batch(f["conv"], msgs)
            COUNTERS["fetched_new"] += new
            self.report(violations)
        elif t == "presence":
            if f.get("id") is None:
                COUNTERS["presence_changes"] += 1
        elif t == "receipt":
            COUNTERS["receipts"] += 1
        elif t == "error" and f.get("id") is None:
            fire("error", 0, exc=_error_of(f))

    def flush_acks(self, session: Session) -> None:
        dev = self.device
        for conv, head in dev.tracker.heads().items():
            if head > dev.acked.get(conv, 0):
                session.send({"t": "ack", "conv": conv, "seq": head})
                dev.acked[conv] = head

    def report(self, violations: list[str]) -> None:
        for line in violations:
            log.error("order violation on %s/%s: %s", self.device.user_id,
                      self.device.device_id, line)
            COUNTERS["order_violations"] += 1
            fire("order", 0, exc=OrderViolation(line))

    # -- behaviours: storm, offline periods, churn ------------------------------------
    def _next_event(self) -> float | None:
        times = [t for t in (self.next_offline, self.next_churn) if t is not None]
        if PROFILE.storm:
            times += [_Process.t0 + at for at in PROFILE.storm.at if at not in self.storms_done]
        return min(times) if times else None

    def _due_event(self, now: float) -> Any:
        if PROFILE.storm:
            for at in PROFILE.storm.at:
                if at not in self.storms_done and _Process.t0 + at <= now + 0.02:
                    return lambda at=at: self._storm(at)
        if self.next_offline is not None and self.next_offline <= now:
            return self._offline_period
        if self.next_churn is not None and self.next_churn <= now:
            return self._churn_cycle
        return None

    def _disconnect(self, abrupt: bool) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if not abrupt:
            with contextlib.suppress(ConnectionLost):
                self.flush_acks(session)
        session.close(abrupt=abrupt)

    def _storm(self, at: float) -> None:
        """Everyone drops at `at` and reconnects together `offline` later, then catches up."""
        storm = PROFILE.storm
        assert storm is not None
        self.storms_done.add(at)
        if time.time() > _Process.t0 + at + 1.0:
            return  # too late to drop together with the others
        self._disconnect(abrupt=storm.drop == "abrupt")
        COUNTERS["storm_drops"] += 1
        gevent.sleep(max(_Process.t0 + at + storm.offline - time.time(), 0.0))
        started = time.perf_counter()
        if self._connect():
            self._catch_up(started)

    def _offline_period(self) -> None:
        """Go offline until `messages` wait for this device (or max_offline), then sync."""
        off = PROFILE.offline
        assert off is not None
        self._disconnect(abrupt=False)
        COUNTERS["offline_periods"] += 1
        deadline = time.time() + off.max_offline
        token = auth.issue(SECRET, self.device.user_id, self.device.device_id, TOKEN_TTL)
        while time.time() < deadline:
            gevent.sleep(min(1.0, max(deadline - time.time(), 0.0)))
            if self._waiting(token, off.messages) >= off.messages:
                break
        started = time.perf_counter()
        if self._connect():
            self._catch_up(started)
        self.next_offline = time.time() + off.every * self.rng.uniform(0.75, 1.25)

    def _waiting(self, token: str, enough: int) -> int:
        """How many messages wait for this device, counted over REST (up to `enough`)."""
        total = 0
        for conv in self.device.convs:
            after = self.device.tracker.head(conv.id) or 0
            url = (f"{CFG.http_url}/v1/conversations/{urllib.parse.quote(conv.id, safe='')}"
                   f"/messages?after={after}&limit=1000")
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    total += len(json.loads(resp.read()).get("msgs", []))
            except (OSError, ValueError, urllib.error.URLError):
                return total
            if total >= enough:
                break
        return total

    def _churn_cycle(self) -> None:
        """Disconnect cleanly, stay away a while, come back and watch again."""
        churn = PROFILE.churn
        assert churn is not None
        self._disconnect(abrupt=False)
        COUNTERS["churn_disconnects"] += 1
        gevent.sleep(self.rng.uniform(*churn.offline))
        if self._connect():
            self._after_connect()
        self.next_churn = time.time() + self.rng.uniform(*churn.online)


def _error_of(frame: dict[str, Any]) -> ErrorFrame:
    if frame.get("t") == "error":
        return ErrorFrame(f"{frame.get('code')}: {frame.get('message')}")
    return ErrorFrame(f"unexpected reply {frame.get('t')!r}")


def _connect_error(exc: Exception) -> ConnectFailed:
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return ConnectFailed(f"handshake refused: HTTP {exc.status_code}")
    if isinstance(exc, ConnectFailed):
        return exc
    if isinstance(exc, wire.NoHello):
        return ConnectFailed(str(exc))
    return ConnectFailed(f"{type(exc).__name__}: {exc}")


class ProfileShape(LoadTestShape):
    """The profile's stages (see loadtest.shape), then a short drain to 0 users."""

    def tick(self) -> tuple[int, float] | None:
        return TIMELINE.tick(self.get_run_time())
