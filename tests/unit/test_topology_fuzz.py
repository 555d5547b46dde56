"""Fuzz the topology parser: any YAML-shaped input is a `Topology` or one `UsageError`.

`msgctl up -t FILE` must answer a bad topology with exit code 2 and one readable
line, never a traceback. `topology.parse` is fed structures near the real schema
(regions, gateway, engines, limits, presence, media, tls, chaos, push), with each
value either plausible or junk of any YAML type; whatever it accepts must also make
the node configuration the runtimes start from, so a topology that parses never
fails later, when every connection is opened. A few bad files then go through the
real `msgctl up` in a subprocess.
"""

from __future__ import annotations

import atexit
import datetime
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgctl import topology as topo_mod
from msgctl.errors import EXIT_USAGE, UsageError
from runtime.config import LimitsConfig, NodeConfig
from runtime.core import frames, paging
from runtime.core.ratelimit import TokenBucket
from tests.conftest import msgctl

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# files the path settings may name: a directory holding junk, so that settings naming
# existing files get past the "no such file" checks to what is inside them
FILES = Path(tempfile.mkdtemp(prefix="msgctl-topo-fuzz-"))
atexit.register(shutil.rmtree, FILES, ignore_errors=True)
(FILES / "junk.json").write_text("[1, 2]")
(FILES / "sa.json").write_text(json.dumps({"project_id": "p", "client_email": "e@x",
                                           "private_key": "k"}))
(FILES / "key.p8").write_text("not a key")
SOURCE = str(FILES / "fuzz.yaml")

# -- values: what YAML can produce (safe_load: no lone surrogates, keys of any scalar type)
scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**63, 10**400])
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12)
           | st.sampled_from(["", " ", "~", "a/b", "../x", "on", "off", "\x00", "é", "1e3"])
           | st.dates() | st.binary(max_size=4))
keys = (st.text(max_size=8) | st.integers(-3, 3) | st.none() | st.booleans()
        | st.dates() | st.floats(allow_nan=False))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(keys, inner, max_size=3), max_leaves=6)


# (integers would pick their bound far more often than 1 in 20; this shrinks towards False)
ONE_IN_20 = st.sampled_from([False] * 19 + [True])


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes junk: one junk value fails the whole topology, so
    with a dozen settings more junk than this would seldom let the parser get deep."""
    return ONE_IN_20.flatmap(lambda bad: junk if bad else good)


def section(required: dict[str, st.SearchStrategy[Any]],
            optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A mapping of the schema's keys, now and then with an unknown key added."""
    known = st.fixed_dictionaries({k: maybe(v) for k, v in required.items()},
                                  optional={k: maybe(v) for k, v in optional.items()})
    extra = st.dictionaries(keys, junk, max_size=1)
    return st.tuples(known, ONE_IN_20, extra).map(lambda t: {**t[0], **t[2]} if t[1] else t[0])


ports = st.integers(1, 65535) | st.sampled_from([0, 65536, 7400, 7420, 9092, 8474, 65535])
small = st.integers(-1, 1100)
positive = (st.integers(1, 2**40) | st.floats(0.001, 1e12)
            | st.sampled_from([0, 0.5, 1, 1.5, math.inf, math.nan, -5, 10**400]))
paths = st.sampled_from(["", "nope.pem", str(FILES), str(FILES / "junk.json"),
                         str(FILES / "sa.json"), str(FILES / "key.p8"), "~no-such-user-x/f",
                         "~/f", "a\x00b", "/"])
# names and hosts: mostly good ones (regions must differ by name), now and then not
names = ONE_IN_20.flatmap(lambda odd: st.text(max_size=6) if odd else st.sampled_from(
    ["local", "us-east", "eu-west", "r_1", "A9"] * 4
    + ["", "a/b", "../up", ".", "x y", "é", "-a", "a" * 41]))
hosts = st.sampled_from(["127.0.0.1", "127.0.0.2", "localhost", "::1", "0.0.0.0"] * 3 + [
    "", "no such host", "a" * 300, "é.example", "h/x"])
kinds = st.sampled_from(["image", "video", "audio", "file", "text", "x"])

provisioned = {"port": ports, "controller_port": ports, "storage_port": ports,
               "jmx_port": ports, "version": st.sampled_from(["4.1.1", "5.0.6", "", "a/b", 4.1]),
               "heap_mb": st.sampled_from([128, 512, 127, 70000])}
external = st.sampled_from(["10.0.0.5:9092", "h:x", "", "redis://h:6379/0", "a,b",
                            "http://s3:9000", "h1,h2:9"])
engine = section({}, provisioned) | section(
    {"external": external},
    {"port": ports, "datacenter": st.sampled_from(["dc1", ""]),
     "access_key": st.just("a"), "secret_key": st.just("s"), "bucket": st.just("b")})
engines = section({e: engine for e in ("kafka", "cassandra", "redis")},
                  {"s3": engine | st.none()})
gateway = section({"port": ports}, {"processes": st.sampled_from([1, 1, 2, 0, 9, -1])})
regions = {
    "embedded": section({"name": names, "host": hosts, "gateway": gateway}, {}),
    "cluster": section({"name": names, "host": hosts, "gateway": gateway,
                        "engines": engines}, {})}
limits = st.dictionaries(st.sampled_from([*LimitsConfig.__dataclass_fields__, "bogus"]),
                         maybe(positive), max_size=6)
presence = section({}, {"heartbeat_ms": positive, "grace_ms": positive})
media = section({}, {
    "enabled": st.booleans(), "port": ports, "public_url": st.sampled_from(
        ["", "https://cdn.example.com", "not a url"]),
    "max_bytes": st.dictionaries(kinds, maybe(positive), max_size=3),
    "content_types": st.dictionaries(kinds, maybe(st.lists(st.sampled_from(
        ["image/png", "text/plain", "nope"]), max_size=3)), max_size=3),
    "upload_ttl_s": small, "url_ttl_s": small})
tls = st.booleans() | section({}, {"enabled": st.booleans(), "ca": paths, "cert": paths,
                                   "key": paths})
chaos = section({}, {"link_proxy": st.sampled_from(["auto", "on", "off", True, False, "x"]),
                     "proxy_port": ports})
push = section({}, {
    "hide_body": st.booleans(), "max_attempts": small, "backoff_ms": small,
    "backoff_max_ms": small, "timeout_s": positive, "concurrency": small,
    "fcm": section({}, {"service_account": paths, "base_url": st.just("http://x"),
                        "token_uri": st.just("")}),
    "apns": section({}, {"key_file": paths, "key_id": st.just("K"), "team_id": st.just("T"),
                         "topic": st.just("com.x"), "host": st.just("https://h")})})
encryption = st.booleans() | section({}, {"enabled": st.booleans()})
settings_ = {"name": names, "limits": limits, "presence": presence, "media": media,
             "tls": tls, "chaos": chaos, "push": push, "encryption": encryption}


def topology(backend: str) -> st.SearchStrategy[dict[str, Any]]:
    """A topology of `backend` (an unsupported one now and then, or none: the default)."""
    region = regions["cluster" if backend == "cluster" else "embedded"]
    return section({"regions": st.lists(region, min_size=1, max_size=3)}, settings_).map(
        lambda raw: raw if backend == "default" else {**raw, "backend": backend})


topologies = st.sampled_from(["embedded", "default", "cluster"] * 3 + ["other"]).flatmap(topology)


def check_usable(topo: topo_mod.Topology) -> None:
    """What the runtimes make of an accepted topology at start and on every connection
    must work: the node config (and its JSON round trip), the rate buckets, the limits."""
    dirs = {k: FILES / k for k in ("data", "logs")}
    for r in topo.regions:
        cfg = topo_mod.node_config(topo, r, dirs, "s" * 64)
        cfg = NodeConfig.from_dict(json.loads(cfg.to_json()))
        lim = cfg.limits
        TokenBucket(lim.rate_per_second, lim.rate_burst, lim.max_strikes,
                    byte_rate=lim.rate_bytes_per_second, byte_burst=lim.rate_burst_bytes)
        TokenBucket(lim.rest_rate_per_second, lim.rest_rate_burst)
        frames.Limits(lim.max_frame_bytes, lim.max_body_bytes,
                      paging.budget(lim.send_queue_bytes))
        assert cfg.presence.heartbeat_ms > 0 and cfg.presence.grace_ms >= 0


def parse_or_usage(raw: Any) -> topo_mod.Topology | None:
    try:
        topo = topo_mod.parse(raw, SOURCE)
    except UsageError as exc:
        # one readable line, naming the file
        assert exc.message and "\n" not in exc.message, exc.message
        assert exc.message.startswith("fuzz.yaml"), exc.message
        return None
    assert isinstance(topo, topo_mod.Topology)
    return topo


@FUZZ
@given(topologies)
def test_near_schema_topologies_parse_or_give_one_usage_error(raw: dict[str, Any]) -> None:
    topo = parse_or_usage(raw)
    if topo is not None:
        check_usable(topo)


@FUZZ
@given(junk)
def test_any_yaml_value_parses_or_gives_one_usage_error(raw: Any) -> None:
    parse_or_usage(raw)


@pytest.mark.parametrize("name", ["local.yaml", "one-region.yaml", "two-region.yaml",
                                  "three-region.yaml"])
def test_shipped_topologies_still_parse(name: str) -> None:
    topo = topo_mod.load(topo_mod.PROJECT_ROOT / "regions" / name)
    check_usable(topo)


def test_valid_limits_presence_and_push_values_are_kept() -> None:
    raw = {"regions": [{"name": "r", "host": "127.0.0.1", "gateway": {"port": 7400}}],
           "limits": {"rate_per_second": 0.5, "rate_burst": 2, "handshake_timeout_s": 2.5},
           "presence": {"heartbeat_ms": 1000, "grace_ms": 0},
           "push": {"timeout_s": 2.5, "max_attempts": 1, "hide_body": True}}
    topo = topo_mod.parse(raw, SOURCE)
    assert topo.limits["rate_per_second"] == 0.5 and topo.presence["grace_ms"] == 0
    assert topo.push["timeout_s"] == 2.5
    check_usable(topo)


def test_agent_addresses_parse_with_the_port_offset() -> None:
    raw = {"regions": [
        {"name": "a", "host": "127.0.0.1", "gateway": {"port": 7400},
         "agent": "127.0.0.1:7700"},
        {"name": "b", "host": "127.0.0.2", "gateway": {"port": 7400}, "agent": 7701}]}
    topo = topo_mod.parse(raw, SOURCE, port_offset=10)
    assert [r.agent for r in topo.regions] == ["127.0.0.1:7710", "127.0.0.2:7711"]
    raw["regions"].append({"name": "c", "host": "127.0.0.3", "gateway": {"port": 7400}})
    with pytest.raises(UsageError, match=r"every region names an 'agent:' .*missing: c\)"):
        topo_mod.parse(raw, SOURCE)
    clash = {"regions": [{"name": "a", "host": "127.0.0.1", "gateway": {"port": 7400},
                          "agent": 7400}]}
    with pytest.raises(UsageError, match="agent and gateway both use port 7400"):
        topo_mod.parse(clash, SOURCE)
    for bad in ("127.0.0.1", "host:port", ":7700", True, 70000, "a b:1", [7700]):
        raw = {"regions": [{"name": "a", "host": "127.0.0.1", "gateway": {"port": 7400},
                            "agent": bad}]}
        with pytest.raises(UsageError, match="agent"):
            topo_mod.parse(raw, SOURCE)


BAD_FILES: dict[str, bytes] = {
    "syntax": b"regions: [\n  - name: x\n  bad: : :\n",
    "not a mapping": b"- 1\n- 2\n",
    "empty": b"",
    "not UTF-8": b"name: \xff\xfe\nregions: []\n",
    "deep nesting": b"regions: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "port a string": b"regions: [{name: r, host: 127.0.0.1, gateway: {port: x}}]\n",
    "limit zero": (b"regions: [{name: r, host: 127.0.0.1, gateway: {port: 7400}}]\n"
                   b"limits: {rate_burst: 0}\n"),
    "limit nan": (b"regions: [{name: r, host: 127.0.0.1, gateway: {port: 7400}}]\n"
                  b"limits: {rate_per_second: .nan}\n"),
    "int key": (b"regions: [{name: r, host: 127.0.0.1, gateway: {port: 7400}}]\n"
                b"limits: {1: 2}\n"),
    "presence junk": (b"regions: [{name: r, host: 127.0.0.1, gateway: {port: 7400}}]\n"
                      b"presence: {heartbeat_ms: soon}\n"),
    "region name a path": b"regions: [{name: ../x, host: 127.0.0.1, gateway: {port: 7400}}]\n",
    "tls path of no user": (b"regions: [{name: r, host: 127.0.0.1, gateway: {port: 7400}}]\n"
                            b"tls: {ca: '~no-such-user-x/ca'}\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_up_with_a_bad_topology_exits_2_with_one_line(case: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(BAD_FILES[case])
    home = str(tmp_path / "home")
    proc = msgctl("up", "-t", str(path), "--home", home, check=False, timeout=60)
    if proc.returncode == 0:  # it should not have: leave nothing running
        msgctl("down", "--home", home, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("msgctl: bad.yaml"), lines


R = {"name": "r", "host": "127.0.0.1", "gateway": {"port": 7400}}
# what the fuzzing found (each raised something else than UsageError, or was accepted and
# failed later: every connection, or the node's start, or `up` writing outside the home)
FOUND: dict[str, tuple[dict[str, Any], str]] = {
    "int key": ({"regions": [R], "limits": {1: 2}}, "unknown setting(s) 1"),
    "null and bool keys": ({"regions": [R], "chaos": {None: 1, True: 2}},
                           "unknown setting(s) None, True"),
    "key with a newline": ({"regions": [R], "media": {"a\nb": 1}}, "setting(s) 'a\\nb'"),
    "limits a number": ({"regions": [R], "limits": 5}, "limits must be a mapping"),
    "presence a number": ({"regions": [R], "presence": 5}, "presence must be a mapping"),
    "fcm: with nothing under it": ({"regions": [R], "push": {"fcm": None}}, ""),
    "tls path of no user": ({"regions": [R], "tls": {"ca": "~no-such-user-x/ca"}},
                            "no such user's home directory"),
    "tls path with a NUL": ({"regions": [R], "tls": {"cert": "a\x00b", "key": "k"}},
                            "not a usable path"),
    "half a frame of burst": ({"regions": [R], "limits": {"rate_burst_bytes": 0.5}},
                              "positive number (an integer; got 0.5)"),
    "NaN rate": ({"regions": [R], "limits": {"rate_per_second": math.nan}}, "got nan"),
    "a 400-digit limit": ({"regions": [R], "limits": {"max_frame_bytes": 10**400}},
                          "positive number"),
    "heartbeat a word": ({"regions": [R], "presence": {"heartbeat_ms": "soon"}},
                         "presence.heartbeat_ms"),
    "grace a date": ({"regions": [R], "presence": {"grace_ms": datetime.date(2024, 1, 1)}},
                     "presence.grace_ms"),
    "push attempts a word": ({"regions": [R], "push": {"max_attempts": "x"}},
                             "push.max_attempts"),
    "apns key id a number": ({"regions": [R], "push": {"apns": {"key_id": 5}}},
                             "push.apns.key_id must be a string"),
    "public_url a number": ({"regions": [R], "media": {"public_url": 5}}, "http(s)://"),
    "region name a path": ({"regions": [{**R, "name": "../x"}]}, "1-40 letters"),
    "host with a space": ({"regions": [{**R, "host": "no such host"}]},
                          "not a host name or IP address"),
    "name too long for the CA": ({"regions": [R], "name": "n" * 70}, "1-60 printable"),
    "port bytes": ({"regions": [{**R, "gateway": {"port": b"\x00"}}]},
                   "'port' must be an integer"),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_what_the_fuzzing_found(case: str) -> None:
    raw, message = FOUND[case]
    if not message:  # accepted now
        check_usable(topo_mod.parse(raw, SOURCE))
        return
    with pytest.raises(UsageError) as exc:
        topo_mod.parse(raw, SOURCE)
    assert message in exc.value.message and "\n" not in exc.value.message, exc.value.message
