"""Fuzz a running gateway through its real sockets: client frames, REST, handshake headers.

The frame parser has unit fuzz tests (tests/unit/test_frames_fuzz.py); these go
through TLS, the WebSocket, the session machine, the services and the store of
a deployment started with `msgctl up`. The properties (docs/protocol.md):

- every client frame is answered: a refused one with an `error` of its code, with
  its `id` when it had a readable one, before the reply to any later frame; an
  accepted one with its reply (carrying its `id`), or with nothing for the frames
  that have no reply on success (`ack`, `read`, `typing`, `watch []`);
- no frame gets an `internal` (or `unavailable`) error, and the connection stays
  open: the fuzzer keeps far under the rate limits of TEST_LIMITS and under the
  hard frame size, the only reasons the protocol gives for closing it;
- every well-formed HTTP request is answered with a status of the REST table and
  a JSON body, never a 500 nor a dropped connection;
- afterwards the gateway still serves a normal client.

What the gateway does with a frame is predicted by `parse_client_frame` (the
same parser, run here on the same bytes): these tests check that the running
system gives the answer the parser promises, whatever happens after parsing.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import ssl
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from runtime.core import frames as f
from runtime.core.errors import (
    BAD_FRAME,
    FORBIDDEN,
    LIMIT_EXCEEDED,
    NOT_FOUND,
    TOO_LARGE,
)
from tests.conftest import TEST_LIMITS, Deployment
from tests.wsclient import Client, Frame

pytestmark = pytest.mark.e2e

T = TypeVar("T")

# bounded, so the whole file runs in well under a minute (about 10 ms an example)
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
LIMITS = f.Limits(TEST_LIMITS["max_frame_bytes"], TEST_LIMITS["max_body_bytes"])
HARD = TEST_LIMITS["hard_frame_bytes"]
# what a fuzzed frame may be refused with; `internal` and `unavailable` are bugs here
# (an exception, or an engine of the embedded deployment away)
ERRORS = {BAD_FRAME, TOO_LARGE, FORBIDDEN, NOT_FOUND, LIMIT_EXCEEDED}
# the reply types of each accepted frame (an `error` of ERRORS is always possible after
# parsing: a conversation not found, not a member, a cap)
REPLIES: dict[type, set[str]] = {
    f.Create: {"created"}, f.Send: {"sent"}, f.Sync: {"batch", "synced"},
    f.Watch: {"presence"}, f.PushRegister: {"ok"}, f.PushUnregister: {"ok"},
    f.Upload: {"upload_url"}, f.Ping: {"pong"}}
NO_REPLY = (f.Ack, f.Read, f.Typing)  # nothing on success

RUN = uuid.uuid4().hex[:8]
USER, PEER, OTHER = f"fz-{RUN}", f"fz-peer-{RUN}", f"fz-other-{RUN}"
OWN_CONV, FOREIGN_CONV = f"fz-own-{RUN}", f"fz-foreign-{RUN}"  # USER is in the first only
_ids = itertools.count(1)


def fresh_id() -> str:
    return f"fz{next(_ids)}"


# -- frames -----------------------------------------------------------------------------
# text with lone surrogates (category Cs) on purpose: they reach the server as \ud800
any_text = st.text(alphabet=st.characters(codec=None), max_size=20)
scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.sampled_from([0, -1, 1, f.MAX_SEQ, f.MAX_SEQ + 1, 2**64, 2**40 + 1, 1001])
           | st.floats(allow_nan=True, allow_infinity=True)
           | any_text | st.sampled_from(["x" * 200, "\ud800", "é" * 129, "\U0001f600"]))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(any_text, inner, max_size=3), max_leaves=6)


# Nesting `depth` deep, put into the JSON text after encoding (the encoder has a recursion
# limit too): under Python's default recursion limit of 1000, 700 levels decode both here
# and in the gateway, whose stacks differ by a hundred frames or so, and 1000 fail in both,
# so the parser run here (see `gateway_view`) predicts the gateway's answer either way
DEEP = "\x00deep:"
deep = st.sampled_from([2, 50, 400, 700, 1000, 3000]).map(lambda n: f"{DEEP}{n}")


def expand_deep(text: str) -> str:
    token = json.dumps(DEEP)[:-1]  # how the encoder wrote the marker: "\u0000deep:
    while (at := text.find(token)) >= 0:
        end = text.index('"', at + 1)
        depth = int(text[at + len(token):end])
        text = f"{text[:at]}{'[' * depth}{']' * depth}{text[end + 1:]}"
    return text


user_key = f"u/{USER}/{'0' * 32}"
GOOD: dict[str, list[Any]] = {
    "members": [[PEER], [], [USER, PEER, PEER], ["a" * 128]],
    "title": ["lunch", "", "é" * 256],
    "conv": [OWN_CONV, OWN_CONV, FOREIGN_CONV, "no-such-conv", "c" * 128],
    "cid": ["m1", "x" * 64, "é"],
    "kind": ["text", "image", "file", "audio"],
    "body": ["hi", "", "é" * 100, "x" * TEST_LIMITS["max_body_bytes"]],
    "media": [{"key": user_key}, {"key": user_key, "size": 3, "content_type": "image/png"},
              {"key": f"u/{PEER}/{'1' * 32}"}, {"key": "../../etc/passwd"}, {},
              {"key": 5}, {"key": user_key, "size": -1, "content_type": ["x"]}],
    "seq": [0, 1, 2, f.MAX_SEQ], "after": [0, 1, f.MAX_SEQ], "limit": [1, 100, 1000],
    "users": [[PEER], [], [USER, PEER], ["a" * 128]],
    "platform": ["fcm", "apns"], "token": ["tok-1", "a:b_c-d", "x" * 4096],
    "content_type": ["image/png", "application/pdf", "IMAGE/PNG", "image/svg+xml"],
    "size": [1, 1024, 2**40, 10 * 1024 * 1024 + 1],
}
SCHEMA: dict[str, list[str]] = {
    "create": ["members", "title", "conv"], "send": ["conv", "cid", "kind", "body", "media"],
    "ack": ["conv", "seq"], "read": ["conv", "seq"], "sync": ["conv", "after", "limit"],
    "watch": ["users"], "typing": ["conv"], "push_register": ["platform", "token"],
    "push_unregister": [], "upload": ["kind", "content_type", "size"], "ping": [],
}
# most values plausible, so that frames get past parsing into the services (one bad field
# refuses the whole frame)
PICK = st.sampled_from(["good"] * 12 + ["junk", "deep", "absent"])
ABSENT = object()  # a field left out


def value_of(name: str) -> st.SearchStrategy[Any]:
    good = st.sampled_from(GOOD[name])
    return PICK.flatmap(lambda how: {"good": good, "junk": junk, "deep": deep}.get(
        how, st.just(ABSENT)))


# the frame's id: mostly a fresh one, whose replies can be told apart
ids = st.sampled_from(["fresh"] * 7 + ["absent", "junk"]).flatmap(
    lambda how: st.just(how) if how != "junk" else st.sampled_from(
        [5, None, "i" * 129, ["x"], "", "\ud800", True, {"id": "x"}]).map(lambda v: ("junk", v)))


@st.composite
def frame_objects(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """A JSON object of one of the frame shapes, and how its `id` is to be set."""
    t = draw(st.sampled_from(list(SCHEMA) * 4 + [
        None, 5, "", "PING", "msg", "hello", ["ping"], "ping\x00"]))
    obj: dict[str, Any] = {"t": t}
    for name in SCHEMA.get(t, []) if isinstance(t, str) else []:
        value = draw(value_of(name))
        if value is not ABSENT:
            obj[name] = value
    obj.update(draw(st.dictionaries(st.sampled_from(list(GOOD)) | any_text, junk,
                                    max_size=2)))
    return obj, draw(ids)


@dataclass
class Case:
    """One WebSocket message to send: `data` as is (`fresh` ones get a new id put in)."""

    data: str | bytes | dict[str, Any]
    id_mode: Any = "absent"
    ascii_only: bool = True
    pad: int = 0  # characters of padding: an over-the-soft-limit frame

    def payload(self) -> str | bytes:
        if not isinstance(self.data, dict):
            return self.data
        obj = dict(self.data)
        if self.id_mode == "fresh":
            obj["id"] = fresh_id()
        elif isinstance(self.id_mode, tuple):
            obj["id"] = self.id_mode[1]
        if self.pad:
            obj["pad"] = "p" * self.pad
        text = json.dumps(obj, ensure_ascii=self.ascii_only)
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate goes as \ud800, as JSON allows
            text = json.dumps(obj)
        return expand_deep(text)


bad_json = st.sampled_from([
    "", " ", "{", "[1,", "nul", "{\"t\":\"ping\",\"id\":\"x\"", "{'t': 'ping'}", "NaN",
    "1e999999", "9" * 5000, "[" * 20000, "{\"t\":" * 5000, "\"\\ud800\"", "\x00",
    "{\"t\":\"ping\"}{\"t\":\"ping\"}", "{\"t\":\"ping\",\"t\":\"send\"}", "\ufeff{}",
]) | st.text(max_size=50)
not_objects = st.sampled_from(["[]", "[{\"t\":\"ping\",\"id\":\"x\"}]", "1", "\"ping\"",
                               "null", "true", "-0.0"])
binaries = st.binary(max_size=64) | st.sampled_from(
    [b"", b"\xff\xfe", json.dumps({"t": "ping", "id": "b1"}).encode(), b"\x00" * 10])
KINDS_OF_CASE: dict[str, st.SearchStrategy[Case]] = {
    "object": st.builds(lambda o, a: Case(o[0], o[1], a), frame_objects(), st.booleans()),
    "bad json": bad_json.map(Case), "not an object": not_objects.map(Case),
    "binary": binaries.map(Case),
    # over the soft limit (too_large, the connection kept), under the hard one (close 1009)
    "over the soft limit": st.builds(lambda o, n: Case(o[0], "fresh", True, n),
                                     frame_objects(),
                                     st.integers(LIMITS.max_frame_bytes, HARD - 70_000)),
}
cases = st.sampled_from(["object"] * 12 + [k for k in KINDS_OF_CASE if k != "object"]).flatmap(
    KINDS_OF_CASE.__getitem__)


def gateway_view(data: str | bytes) -> tuple[f.ClientFrame | f.FrameError, str | None]:
    """What the gateway makes of `data` and the id it reads for an error: its parser, under
    the recursion limit the gateway runs with (Hypothesis raises it while a test runs)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        return f.parse_client_frame(data, LIMITS), f.peek_id(data)
    finally:
        sys.setrecursionlimit(limit)


class Wire:
    """One long-lived session of USER on its own event loop (examples are synchronous):
    each case is sent, then a `ping`; what the case got is what arrived before the
    `pong` (and its `sent` after it)."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.loop = asyncio.new_event_loop()
        self.client: Client | None = None
        self.closes: list[str] = []  # closes seen (each fails the case that caused it)
        # where each log of the deployment was when this module began
        self.log_marks = {p: p.stat().st_size for p in (dep.home / "logs").glob("*.log")}

    def errors_logged(self) -> list[str]:
        """Lines logged at level error or above since this module began (an exception a
        frame or request raised is logged so, even where the client got an answer)."""
        out = []
        for path in (self.dep.home / "logs").glob("*.log"):
            with path.open("rb") as fh:
                fh.seek(self.log_marks.get(path, 0))
                out += [line.decode(errors="replace")[:400] for line in fh
                        if b'"level": "error"' in line or b'"level": "critical"' in line]
        return out

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def session(self) -> Client:
        if self.client is not None and self.client.closed is None:
            return self.client
        if self.client is not None:  # a case closed it: a new one for the next cases
            self.closes.append(str(self.client.closed))
        self.client = await Client.open(self.dep.ws_url, self.dep.token(USER, "fuzz"))
        return self.client

    async def ping(self, c: Client) -> Frame:
        pid = fresh_id()
        await c.send({"t": "ping", "id": pid})
        return await c.wait(lambda fr: fr.get("id") == pid, timeout=10)

    async def check(self, case: Case) -> None:
        c = await self.session()
        data = case.payload()
        expected, peeked = gateway_view(data)
        start = len(c.frames)
        await c.ws.send(data)
        pong = await self.ping(c)
        assert pong["t"] == "pong", pong
        assert c.closed is None, f"closed by {data[:200]!r}: {c.closed}"
        got = c.frames[start:]
        for frame in got:  # every error until the pong is this case's (or a late `sent`)
            if frame.get("t") == "error":
                assert frame["code"] in ERRORS, (frame, data[:300])
        if isinstance(expected, f.FrameError):
            fid = expected.id if expected.id is not None else peeked
            errors = [fr for fr in got if fr.get("t") == "error"]
            assert errors, f"no error for {data[:300]!r}"
            assert errors[0]["code"] == expected.code, (errors[0], data[:300])
            assert errors[0].get("id") == fid, (errors[0], fid)
            return
        fid = expected.id
        if case.id_mode != "fresh" or fid is None:
            return  # an id of the fuzzer's (absent, "", ...): replies cannot be told apart
        replies = [fr for fr in got if fr.get("id") == fid]
        if not replies and isinstance(expected, f.Send):
            # sent once durable, after the frames read later: the only reply that may
            replies = [await c.wait(lambda fr: fr.get("id") == fid, timeout=10)]
        if isinstance(expected, NO_REPLY) or isinstance(expected, f.Watch) and not (
                expected.users):
            assert all(fr["t"] == "error" for fr in replies), replies
            return
        assert replies, f"no reply to {data[:300]!r}"
        first = replies[0]
        if first["t"] == "error":
            assert first["code"] in ERRORS, (first, data[:300])
        else:
            assert first["t"] in REPLIES[type(expected)], (first, data[:300])

    async def normal_client_still_served(self) -> None:
        """A fresh pair of devices does what a real client does."""
        me = await Client.open(self.dep.ws_url, self.dep.token(USER, "after"))
        peer = await Client.open(self.dep.ws_url, self.dep.token(PEER, "after"))
        conv = (await me.create([PEER]))["conv"]
        sent = await me.send_text(conv, f"after-{uuid.uuid4().hex}", "still here")
        (msg,) = await peer.wait_msgs(conv, 1)
        assert msg["seq"] == sent["seq"] and msg["body"] == "still here"
        assert (await peer.request({"t": "ping"}))["t"] == "pong"
        for c in (me, peer):
            await c.close()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


@pytest.fixture(scope="module")
def wire(embedded_deployment: Deployment) -> Iterator[Wire]:
    """USER in OWN_CONV (with PEER), OTHER's FOREIGN_CONV, and USER's session."""
    w = Wire(embedded_deployment)

    async def setup() -> None:
        for user, conv, members in ((USER, OWN_CONV, [PEER]), (OTHER, FOREIGN_CONV, [PEER])):
            c = await Client.open(embedded_deployment.ws_url,
                                  embedded_deployment.token(user, "setup"))
            await c.create(members, conv)
            await c.send_text(conv, "first")
            await c.close()
    w.run(setup())
    yield w
    w.run(w.close())
    w.loop.close()


def test_fuzzed_frames_each_get_their_answer_on_one_connection(wire: Wire) -> None:
    @FUZZ
    @given(cases)
    def fuzz(case: Case) -> None:
        wire.run(wire.check(case))

    fuzz()
    assert wire.closes == [], wire.closes  # no case closed the connection
    client = wire.run(wire.session())
    assert wire.run(wire.ping(client))["t"] == "pong"
    internal = [fr for fr in client.frames if fr.get("t") == "error"
                and fr["code"] not in ERRORS]
    assert internal == []
    wire.run(wire.normal_client_still_served())


def test_a_frame_over_the_hard_limit_closes_only_its_connection(wire: Wire) -> None:
    async def scenario() -> None:
        c = await Client.open(wire.dep.ws_url, wire.dep.token(USER, "huge"))
        await c.ws.send(json.dumps({"t": "ping", "id": "h", "pad": "p" * HARD}))
        closed = await c.wait_closed()
        assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1009
        await wire.normal_client_still_served()
    wire.run(scenario())


# -- handshake headers ----------------------------------------------------------------------
def test_two_authorization_headers_are_refused_with_401(wire: Wire) -> None:
    good = wire.dep.token(USER, "dup")

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as exc:
            await connect(wire.dep.ws_url, additional_headers=[
                ("Authorization", f"Bearer {good}"), ("Authorization", "Bearer x")])
        assert exc.value.response.status_code == 401
        assert b"more than one Authorization header" in exc.value.response.body
    wire.run(scenario())


def test_a_session_opened_with_two_host_headers_can_upload(wire: Wire) -> None:
    async def scenario() -> None:
        # a user of its own (no slots taken by the fuzzing); the token in the query, as
        # `connect` sets the headers it carries itself
        c = await Client.open(wire.dep.ws_url, wire.dep.token(f"fz-hosts-{RUN}", "hosts"),
                              query_token=True, additional_headers=[("Host", "evil.example")])
        reply = await c.request({"t": "upload", "kind": "image", "content_type": "image/png",
                                 "size": 3})
        assert reply["t"] == "upload_url", reply  # before: `internal` (MultipleValuesError)
        assert "evil.example" not in reply["upload"]["url"], reply
        await c.close()
    wire.run(scenario())


# -- REST ------------------------------------------------------------------------------------
REST_STATUSES = {200, 400, 401, 403, 404, 405, 429}


@dataclass
class Rest:
    """A GET (or another method without a body) and the credentials it carries."""

    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    # what the token checks will find: none, good, bad, or unknown (a fuzzed token=)
    credentials: str = "none"


def request(dep: Deployment, req: Rest) -> tuple[int, str, bytes]:
    """Status, content type and body; any failure to get a response fails the test."""
    conn = http.client.HTTPSConnection("127.0.0.1", dep.port, timeout=10,
                                       context=ssl.create_default_context())
    try:
        conn.putrequest(req.method, req.target, skip_host=any(
            k.lower() == "host" for k, _ in req.headers), skip_accept_encoding=True)
        for key, value in req.headers:
            conn.putheader(key, value)
        if req.method != "GET":
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def pct(text: str, safe: str = "") -> str:
    # lone surrogates travel as the bytes a careless client would send
    return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


query_values = (any_text | st.sampled_from(
    ["0", "1", "-1", "+1", " 1", "1_000", "0x10", "1.0", "1e3", "١٢", str(f.MAX_SEQ),
     str(f.MAX_SEQ + 1), "9" * 5000, "1000", "1001", "", "\x00", "%"]))
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                      max_size=40)


@st.composite
def rest_requests(draw: st.DrawFn, tokens: dict[str, str]) -> Rest:
    conv = draw(st.sampled_from([OWN_CONV] * 4 + [FOREIGN_CONV, "no-such", "", "..", "%2F"])
                | any_text)
    history = f"/v1/conversations/{pct(conv)}/messages"
    path = draw(st.sampled_from([history] * 8 + [
        f"{history}/",
        f"/v1/conversations/{pct(conv)}", "/v1/conversations//messages", "/v1/conversations",
        f"/v1/conversations/{pct(conv, '/')}/messages", "/healthz", "/readyz", "/metrics",
        "/", "//", "/v1", "/v1/ws/x", "/%ff%zz", "/..%2f..%2fetc/passwd", "*",
        f"/{pct(draw(any_text), '/')}"]))
    params: list[tuple[str, str]] = draw(st.lists(st.tuples(
        st.sampled_from(["after", "limit", "token", "x", ""]), query_values), max_size=3))
    how = draw(st.sampled_from(["header", "header", "query", "none", "bad", "two", "lower",
                                "basic", "expired", "peer"]))
    # `_token`: the Authorization header if it is "Bearer <something>", else ?token=
    # (parse_qs: the first one), so a fuzzed token= decides where there is no such header
    fuzzed_query = any(k == "token" for k, _ in params)
    headers: list[tuple[str, str]] = []
    credentials = "good"
    if how == "header":
        headers.append(("Authorization", f"Bearer {tokens['good']}"))
    elif how == "lower":
        headers.append(("authorization", f"bearer {tokens['good']}"))
    elif how == "peer":  # PEER is in both conversations, USER only in OWN_CONV
        headers.append(("Authorization", f"Bearer {tokens['peer']}"))
    elif how in ("query", "none", "basic"):
        if how == "query":
            params.append(("token", tokens["good"]))
        if how == "basic":
            headers.append(("Authorization", "Basic dXNlcjpwYXNz"))
        credentials = ("unknown" if fuzzed_query else  # a fuzzed token= counts first
                       "good" if how == "query" else "none")
    else:
        credentials = "bad"
        headers += {"bad": [("Authorization", f"Bearer x{draw(header_text)}")],
                    "expired": [("Authorization", f"Bearer {tokens['expired']}")],
                    "two": [("Authorization", f"Bearer {tokens['good']}"),
                            ("Authorization", "Bearer x")]}[how]
    headers += draw(st.lists(st.tuples(
        st.sampled_from(["X-Junk", "Host", "Upgrade", "Connection", "Cookie", "Accept",
                         "X-Forwarded-For", "Sec-WebSocket-Key"]), header_text), max_size=3))
    query = "&".join(f"{pct(k)}={pct(v)}" for k, v in params)
    target = path + (f"?{query}" if query else "") if path != "*" else path
    if len(target) > 8000:  # a request line over 8 KiB is a 414 (its own test): cut it
        target = target[:8000].rsplit("&", 1)[0]
        if credentials == "good" and how == "query" and \
                f"token={pct(tokens['good'])}" not in target:
            credentials = "none"  # the cut took the token (appended last) with it
    method = draw(st.sampled_from(["GET"] * 8 + ["POST", "DELETE", "OPTIONS"]))
    return Rest(method, target, headers, credentials)


def test_fuzzed_rest_requests_get_a_status_and_json(wire: Wire) -> None:
    dep = wire.dep
    tokens = {"good": dep.token(USER, "rest"), "peer": dep.token(PEER, "rest"),
              "expired": dep.token(USER, "rest", ttl=-10)}

    @FUZZ
    @given(rest_requests(tokens))
    def fuzz(req: Rest) -> None:
        status, ctype, body = request(dep, req)
        assert status in REST_STATUSES, (status, body[:200], req)
        route = req.target.split("?")[0].rstrip("/")
        if route == "/metrics" and status == 200:
            assert ctype.startswith("text/plain")
            return
        if route == "/v1/ws" and req.credentials == "good":
            return  # the WebSocket handshake's own answers (426 without an upgrade)
        assert ctype == "application/json", (ctype, body[:200], req)
        doc = json.loads(body)
        if status != 200:
            assert isinstance(doc.get("error"), str) and isinstance(doc.get("message"), str)
        elif "msgs" in doc:
            assert isinstance(doc["msgs"], list) and isinstance(doc["more"], bool)
        history = route.startswith("/v1/conversations/") and route.endswith("/messages")
        if history and req.credentials in ("none", "bad"):
            assert status == 401, (status, doc, req)  # the token before the parameters
        if history and req.credentials == "good":
            assert status != 401, (status, doc, req)

    fuzz()
    # the REST surface and the WebSocket still serve
    status, body = dep.get(f"/v1/conversations/{OWN_CONV}/messages?after=0&limit=5",
                           tokens["good"])
    assert status == 200 and body["msgs"][0]["body"] == "hi", body
    wire.run(wire.normal_client_still_served())


@pytest.mark.parametrize(("what", "status"), [("a path over 8 KiB", 414),
                                              ("200 headers", 431)])
def test_oversized_requests_get_a_status_not_a_drop(wire: Wire, what: str,
                                                    status: int) -> None:
    req = (Rest("GET", "/" + "a" * 9000) if status == 414 else
           Rest("GET", "/healthz", [(f"X-{i}", "1") for i in range(200)]))
    got, _, _ = request(wire.dep, req)
    assert got == status


def test_the_gateway_answers_probes_and_logged_no_error(wire: Wire) -> None:
    deadline = time.monotonic() + 5
    status, body = wire.dep.get("/readyz")
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        status, body = wire.dep.get("/readyz")
    assert status == 200 and body["ready"] is True, body
    assert wire.errors_logged() == []
