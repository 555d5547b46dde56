"""MediaService (upload slots, send checks) over a fake store; the topology's media section."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from msgctl import topology as topo_mod
from msgctl.errors import UsageError
from runtime.config import MediaConfig, NodeConfig
from runtime.core import media as m
from runtime.media.s3 import S3BlobStore
from runtime.media.service import MediaService, client_host
from runtime.media.store import BlobInfo, LocalBlobStore

SECRET = m.derive_secret("s" * 64)


class FakeStore(LocalBlobStore):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, SECRET)
        self.blobs: dict[str, BlobInfo] = {}

    async def head(self, key: str) -> BlobInfo | None:
        return self.blobs.get(key)


def service(tmp: Path, **cfg: Any) -> MediaService:
    return MediaService(MediaConfig(**cfg), SECRET, FakeStore(tmp), 7420,
                        clock=lambda: 1_800_000_000.5, token=lambda: "ab" * 16)


def test_slot_is_the_contract_reply(tmp_path: Path) -> None:
    svc = service(tmp_path)
    got = svc.slot("alice", "image", "Image/PNG", 1234, "10.1.2.3")
    assert isinstance(got, dict)
    assert got["t"] == "upload_url"
    assert got["upload"]["url"] == "http://10.1.2.3:7420/v1/blobs"
    key = "u/alice/" + "ab" * 16
    fields = got["upload"]["fields"]
    assert fields["key"] == key and fields["Content-Type"] == "image/png"
    assert m.verify_post(SECRET, fields, 1_800_000_000) == m.PostGrant(key, "image/png", 1, 1234)
    assert m.verify_post(SECRET, fields, 1_800_000_000 + 900).code == "forbidden"  # 15 min
    media = got["media"]
    assert (media["key"], media["content_type"], media["size"]) == (key, "image/png", 1234)
    assert media["url"].startswith(f"http://10.1.2.3:7420/v1/media/{key}?expires=")


def test_slot_refusals(tmp_path: Path) -> None:
    svc = service(tmp_path, max_bytes={"image": 10})
    assert svc.slot("a", "image", "image/png", 11, "h").code == "too_large"
    assert svc.slot("a", "image", "text/html", 1, "h").code == "bad_frame"
    assert svc.slot("a", "text", "text/plain", 1, "h").code == "bad_frame"


def test_public_url_overrides_the_host(tmp_path: Path) -> None:
    svc = service(tmp_path, public_url="https://cdn.example")
    got = svc.slot("alice", "video", "video/mp4", 5, "127.0.0.1")
    assert got["upload"]["url"] == "https://cdn.example/v1/blobs"
    assert got["media"]["url"].startswith("https://cdn.example/v1/media/")


async def test_attach(tmp_path: Path) -> None:
    svc = service(tmp_path)
    key = "u/alice/" + "ab" * 16
    assert (await svc.attach("alice", "image", {"key": key}, "h")).code == "bad_frame"
    svc.store.blobs[key] = BlobInfo(key, "image/png", 99)  # type: ignore[attr-defined]
    ok = await svc.attach("alice", "image", {"key": key, "size": 99,
                                             "content_type": "image/png", "url": "x"}, "h")
    assert isinstance(ok, dict) and ok["size"] == 99 and ok["url"].startswith("http://h:7420/")
    got = await svc.attach("bob", "image", {"key": key}, "h")
    assert got.code == "forbidden" and "not one of your uploads" in got.message
    assert (await svc.attach("alice", "image", {"key": key, "size": 98}, "h")).code == "bad_frame"
    assert (await svc.attach("alice", "image", {"key": key, "content_type": "image/gif"},
                             "h")).code == "bad_frame"
    assert (await svc.attach("alice", "video", {"key": key}, "h")).code == "bad_frame"
    assert (await svc.attach("alice", "image", {"key": "../../etc/passwd"}, "h")).code \
        == "forbidden"
    assert (await svc.attach("alice", "image", "k", "h")).code == "bad_frame"


async def test_the_url_signed_at_send_pins_the_object(tmp_path: Path) -> None:
    """A store with ETags (S3): the URL in the message names the ETag and type seen at send;
    the upload slot's URL (before any object exists) pins nothing."""
    svc = service(tmp_path)
    key = "u/alice/" + "ab" * 16
    slot = svc.slot("alice", "image", "image/png", 99, "h")
    assert isinstance(slot, dict) and "etag=" not in slot["media"]["url"]
    svc.store.blobs[key] = BlobInfo(key, "image/png", 99, "0f" * 16)  # type: ignore[attr-defined]
    got = await svc.attach("alice", "image", {"key": key}, "h")
    assert isinstance(got, dict)
    query = dict(parse_qsl(urlsplit(got["url"]).query))
    assert m.pin_of(query) == m.Pinned("0f" * 16, "image/png")
    assert m.verify_url([SECRET], key, query, 1_800_000_000) is None


def test_an_s3_slot_is_a_post_to_the_gateway_never_to_s3(tmp_path: Path) -> None:
    """S3Proxy checks nothing of a POST policy but its signature: the slot is the gateway's
    own signed policy, for its media port, which writes S3 itself."""
    store = S3BlobStore(None, "bucket", SECRET, tmp_path / "tmp")
    svc = MediaService(MediaConfig(), SECRET, store, 7427, clock=lambda: 1_800_000_000.5,
                       token=lambda: "cd" * 16)
    got = svc.slot("alice", "image", "image/png", 10, "10.0.0.1")
    assert isinstance(got, dict)
    assert got["upload"]["url"] == "http://10.0.0.1:7427/v1/blobs"
    grant = m.verify_post(SECRET, got["upload"]["fields"], 1_800_000_000)
    assert grant == m.PostGrant("u/alice/" + "cd" * 16, "image/png", 1, 10)


@pytest.mark.parametrize(("header", "host"), [
    ("127.0.0.2:7400", "127.0.0.2"), ("region-eu.example:443", "region-eu.example"),
    ("[::1]:7400", "[::1]"), ("localhost", "localhost"), (None, "dflt"), ("", "dflt"),
    ("evil/path:1", "dflt"), ("a b:1", "dflt")])
def test_client_host(header: str | None, host: str) -> None:
    assert client_host(header, "dflt") == host


def _topo(tmp_path: Path, media: Any = None, port: int = 7400, regions: int = 1,
          backend: str = "embedded") -> topo_mod.Topology:
    raw: dict[str, Any] = {"backend": backend, "regions": [
        {"name": f"r{i}", "host": f"127.0.0.{i + 1}", "gateway": {"port": port}}
        for i in range(regions)]}
    if media is not None:
        raw["media"] = media
    return topo_mod.parse(raw, str(tmp_path / "t.yaml"))


def test_topology_media_defaults_and_settings(tmp_path: Path) -> None:
    topo = _topo(tmp_path)
    assert topo.regions[0].media_port == 7420 and (7420, "media") in topo.regions[0].ports()
    topo = _topo(tmp_path, {"port": 9000, "max_bytes": {"image": 5},
                            "content_types": {"video": ["video/x-test"]}, "upload_ttl_s": 60})
    assert topo.regions[0].media_url == "https://127.0.0.1:9000"  # TLS unless turned off
    dirs = {k: tmp_path / k for k in ("data", "logs")}
    cfg = topo_mod.node_config(topo, topo.regions[0], dirs, "s" * 64)
    round_trip = NodeConfig.from_dict(__import__("json").loads(cfg.to_json()))
    assert round_trip.media == MediaConfig(port=9000, max_bytes={"image": 5},
                                           content_types={"video": ["video/x-test"]},
                                           upload_ttl_s=60)
    assert _topo(tmp_path, {"enabled": False}).regions[0].media_port == 0
    assert [r.media_port for r in _topo(tmp_path, regions=2).regions] == [7420, 7420]


@pytest.mark.parametrize(("media", "needle"), [
    ({"bogus": 1}, "unknown setting"), ({"port": "x"}, "non-negative integer"),
    ({"max_bytes": {"gif": 1}}, "unknown kind"), ({"max_bytes": {"image": 0}}, "positive"),
    ({"content_types": {"image": "image/png"}}, "list of content types"),
    ({"content_types": []}, "must map a kind"), ([], "must be a mapping"),
    ({"port": 7400}, "both use port")])
def test_topology_media_errors(tmp_path: Path, media: Any, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        _topo(tmp_path, media)


def test_media_port_is_per_region(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="per region"):
        _topo(tmp_path, {"port": 9000}, regions=2)


async def test_send_rechecks_the_stored_blob_against_the_kind(tmp_path: Path) -> None:
    """An S3 server that ignores the POST policy (S3Proxy) may store anything: send checks."""
    svc = service(tmp_path, max_bytes={"image": 100})
    store = svc.store
    assert isinstance(store, FakeStore)
    big, html = "u/alice/" + "1" * 32, "u/alice/" + "2" * 32
    store.blobs[big] = BlobInfo(big, "image/png", 101)
    store.blobs[html] = BlobInfo(html, "text/html", 10)
    got = await svc.attach("alice", "image", {"key": big}, "h")
    assert isinstance(got, m.Refusal) and got.code == "too_large"
    assert "limited to 100 bytes" in got.message
    got = await svc.attach("alice", "image", {"key": html}, "h")
    assert isinstance(got, m.Refusal) and got.code == "bad_frame"


async def test_a_blob_store_that_does_not_answer_is_unavailable(tmp_path: Path) -> None:
    from runtime.media.store import BlobStoreDown

    class Down(FakeStore):
        async def head(self, key: str) -> BlobInfo | None:
            raise BlobStoreDown("connection refused")

    svc = MediaService(MediaConfig(), SECRET, Down(tmp_path), 7420)
    got = await svc.attach("alice", "image", {"key": "u/alice/" + "3" * 32}, "h")
    assert isinstance(got, m.Refusal) and got.code == "unavailable"
