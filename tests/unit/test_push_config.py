"""The topology's push section: checked at load, carried into the node config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msgctl import topology
from msgctl.errors import UsageError
from runtime.config import NodeConfig

REGIONS = [{"name": "a", "host": "127.0.0.1", "gateway": {"port": 7400}}]


def parse(tmp_path: Path, push: object) -> topology.Topology:
    return topology.parse({"regions": REGIONS, "push": push}, str(tmp_path / "t.yaml"))


def test_relative_credentials_resolve_next_to_the_topology(tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text(json.dumps({"project_id": "p", "client_email": "e",
                                                  "private_key": "k"}))
    (tmp_path / "k.p8").write_text("key")
    topo = parse(tmp_path, {"hide_body": True, "max_attempts": 2,
                            "fcm": {"service_account": "sa.json"},
                            "apns": {"key_file": "k.p8", "key_id": "K", "team_id": "T",
                                     "topic": "com.x"}})
    cfg = topology.node_config(topo, topo.regions[0], {"data": tmp_path, "logs": tmp_path}, "s")
    assert cfg.push.hide_body and cfg.push.max_attempts == 2
    assert cfg.push.fcm.service_account == str(tmp_path / "sa.json")
    again = NodeConfig.from_dict(json.loads(cfg.to_json()))
    assert again.push == cfg.push and again.push.apns.topic == "com.x"


@pytest.mark.parametrize("push, message", [
    ({"bogus": 1}, "unknown setting(s) bogus"),
    ({"fcm": {"service_account": "missing.json"}}, "no such file"),
    ({"fcm": "x"}, "push.fcm must be a mapping"),
    ({"apns": {"key_file": "k.p8"}}, "needs key_id, team_id, topic"),
    ({"fcm": {"service_account": "bad.json"}}, "not a service account key file"),
    ("x", "'push' must be a mapping"),
])
def test_bad_push_sections_are_one_line_errors(tmp_path: Path, push: object,
                                               message: str) -> None:
    (tmp_path / "k.p8").write_text("key")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(tmp_path, push)


def test_default_is_the_log_sink(tmp_path: Path) -> None:
    from runtime.adapters.push import build_provider

    topo = topology.parse({"regions": REGIONS}, str(tmp_path / "t.yaml"))
    cfg = topology.node_config(topo, topo.regions[0], {"data": tmp_path, "logs": tmp_path}, "s")
    router = build_provider(cfg.push, tmp_path, "a")
    assert router.providers == {} and "log sink" in router.describe()
