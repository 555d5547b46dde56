"""Settings handed to the Locust processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import PROFILES_DIR
from loadtest.config import CONFIG_ENV, RunConfig, from_env, new_run_id


def test_round_trip_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig(run="abc", ws_url="ws://127.0.0.2:7400/v1/ws", region="local",
                    home=str(tmp_path), profile=str(PROFILES_DIR / "steady.yaml"),
                    out=str(tmp_path), workers=2, users=7, duration=12.0)
    path = tmp_path / "config.json"
    cfg.write(path)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    again = from_env()
    assert again == cfg
    prof = again.load_profile()
    assert (prof.users, prof.duration, prof.name) == (7, 12.0, "steady")
    assert again.http_url == "http://127.0.0.2:7400"
    assert RunConfig(**{**cfg.__dict__, "ws_url": "wss://h:1/v1/ws"}).http_url == "https://h:1"


def test_run_ids_are_short_and_distinct() -> None:
    a, b = new_run_id(1795946000.001), new_run_id(1795946000.002)
    assert a != b and len(a) <= 9 and a.isalnum()


def test_from_env_needs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("MSGCTL_LOAD_PROFILE", raising=False)
    with pytest.raises(RuntimeError, match="MSGCTL_LOAD_CONFIG"):
        from_env()
