"""The deployment home is private from the first byte: modes as files are created.

Each test runs under umask 000, the loosest there is, so a file or folder that
is private here is private because msgctl made it so, not because of the
environment's umask. Atomic writes are watched at the moment of the rename:
the temp file must already be 0600 then (a write followed by a chmod would
leave a readable copy in between).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgctl import topology
from msgctl.home import Home, open_private, private_umask, write_json_atomic, write_private
from msgctl.infra import s3
from runtime.config import NodeConfig


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """(mode, content) of every temp file at the moment it is renamed in place."""
    seen: list[tuple[int, str]] = []
    real = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append((mode(Path(src)), Path(src).read_text()))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    return seen


def test_write_json_atomic_never_makes_a_readable_temp_file(
        tmp_path: Path, renames: list[tuple[int, str]]) -> None:
    target = tmp_path / "state.json"
    target.write_text("{}")
    target.chmod(0o644)  # an older, readable one is replaced, not reused
    write_json_atomic(target, {"secret": "s3cr3t"})
    assert renames == [(0o600, json.dumps({"secret": "s3cr3t"}, indent=2))]
    assert mode(target) == 0o600 and json.loads(target.read_text()) == {"secret": "s3cr3t"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_private(tmp_path / "plan.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_open_private_creates_0600_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    for line in (b"one\n", b"two\n"):
        with open_private(log) as f:
            f.write(line)
    assert mode(log) == 0o600 and log.read_bytes() == b"one\ntwo\n"


def test_ensure_makes_and_tightens_a_private_home(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "logs").mkdir(parents=True)
    for d in (old, old / "logs"):
        d.chmod(0o755)  # a home from before, or made under umask 022
    for h in (Home(tmp_path / "new" / "home").ensure(), Home(old).ensure()):
        for d in (h.root, *h.dirs.values()):
            assert mode(d) == 0o700, d


def test_the_secret_and_the_root_it_makes_are_private(tmp_path: Path) -> None:
    h = Home(tmp_path / "fresh")  # `msgctl token` before any `up`
    h.secret()
    assert mode(h.root) == 0o700 and mode(h.secret_file) == 0o600


def test_node_config_with_the_jwt_secret_is_born_0600(
        tmp_path: Path, renames: list[tuple[int, str]]) -> None:
    cfg = NodeConfig(region="local", host="127.0.0.1", port=1, data_dir=str(tmp_path),
                     log_dir=str(tmp_path), secret="jwt-secret")
    path = topology._write_config(tmp_path, "node.local", cfg)
    assert [m for m, _ in renames] == [0o600] and "jwt-secret" in renames[0][1]
    assert mode(path) == 0o600


def test_s3proxy_properties_with_the_credential_are_born_0600(
        tmp_path: Path, renames: list[tuple[int, str]]) -> None:
    path = s3.write_config(tmp_path / "conf", tmp_path / "data", "127.0.0.1", 1)
    # credentials.json, then the properties naming them
    assert [m for m, _ in renames] == [0o600, 0o600] and "s3proxy.credential" in renames[1][1]
    assert mode(path) == 0o600


def test_private_umask_applies_to_children_and_is_restored(tmp_path: Path) -> None:
    with private_umask():
        (tmp_path / "d").mkdir()
        (tmp_path / "f").write_text("x")
    assert (mode(tmp_path / "d"), mode(tmp_path / "f")) == (0o700, 0o600)
    assert os.umask(0) == 0  # the block's umask did not stay
