"""`msgctl infra fetch`: Maven really runs once per engine and version, then the cache answers."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import msgctl


def _topology(path: Path, kafka: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"name": "f", "backend": "cluster", "regions": [{
        "name": "r", "host": "127.0.0.1", "gateway": {"port": 7400},
        "engines": {"kafka": kafka, "cassandra": {}, "redis": {}}}]}))
    return path


def test_fetch_runs_maven_once_then_is_cached(tmp_path: Path) -> None:
    env = {"MSGCTL_CACHE": str(tmp_path / "cache")}
    first = json.loads(msgctl("infra", "fetch", "--engine", "kafka", "--json", env=env).stdout)
    (got,) = first["engines"]
    assert got["engine"] == "kafka" and got["version"] == "4.1.1" and not got["cached"]
    lib = Path(got["path"]) / "lib"
    assert lib.parent.parent == tmp_path / "cache" and got["jars"] > 50
    jars = {p.name for p in lib.glob("*.jar")}
    assert "kafka_2.13-4.1.1.jar" in jars and "connect-mirror-4.1.1.jar" in jars
    # log4j2 is Kafka 4's logging; no reload4j binding to complain about missing appenders
    assert any(j.startswith("log4j-slf4j-impl-") for j in jars)
    assert not any("reload4j" in j for j in jars)
    marker = lib.parent / "fetched.json"
    mvn_log = tmp_path / "cache" / "kafka-4.1.1.mvn.log"
    stamps = (marker.stat().st_mtime_ns, mvn_log.stat().st_mtime_ns)

    second = json.loads(msgctl("infra", "fetch", "--engine", "kafka", "--json", env=env).stdout)
    (again,) = second["engines"]
    assert again["cached"] and again["jars"] == got["jars"] and second["seconds"] < 1.0
    assert (marker.stat().st_mtime_ns, mvn_log.stat().st_mtime_ns) == stamps  # mvn did not run


def test_a_missing_artifact_is_one_line_naming_it(tmp_path: Path) -> None:
    topo = _topology(tmp_path / "t.yaml", {"port": 9092, "version": "0.0.1-nope"})
    env = {"MSGCTL_CACHE": str(tmp_path / "cache")}
    proc = msgctl("infra", "fetch", "-t", str(topo), "--engine", "kafka", env=env, check=False)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("msgctl: cannot fetch kafka 0.0.1-nope "
                           "(org.apache.kafka:kafka_2.13:0.0.1-nope)")
    assert "external:" in line
    assert not (tmp_path / "cache" / "kafka-0.0.1-nope").exists()  # no half-made entry


def test_fetch_s3proxy_into_its_own_folder(tmp_path: Path) -> None:
    env = {"MSGCTL_CACHE": str(tmp_path / "cache")}
    out = json.loads(msgctl("infra", "fetch", "--engine", "s3", "--json", env=env).stdout)
    (got,) = out["engines"]
    assert (got["engine"], got["version"]) == ("s3", "2.6.0")
    lib = Path(got["path"]) / "lib"
    assert lib.parent == tmp_path / "cache" / "s3-2.6.0"
    assert (lib / "s3proxy-2.6.0.jar").is_file()
    assert any(j.name.startswith("jclouds-blobstore-") for j in lib.glob("*.jar"))
