"""The engine cache: Maven jars fetched once per engine and version, outside any deployment.

Layout: ``<cache>/<engine>-<version>/lib/*.jar`` beside the generated ``pom.xml``
and a ``fetched.json`` marker written last, so a folder with the marker is
complete and a second fetch (or ``up``) downloads nothing. A fetch builds in a
temporary folder and renames it into place under a lock, so two fetches at
once (a test run and a user) never see half a folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from msgctl.errors import MsgctlError
from msgctl.infra.catalog import CATALOG, Engine

MARKER = "fetched.json"


def cache_root() -> Path:
    """``$MSGCTL_CACHE``, else ``$XDG_CACHE_HOME/msgctl/engines`` (``~/.cache/...``)."""
    explicit = os.environ.get("MSGCTL_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "msgctl" / "engines"


def engine_dir(engine: str, version: str) -> Path:
    return cache_root() / f"{engine}-{version}"


@dataclass
class Fetched:
    engine: str
    version: str
    path: Path
    jars: int
    bytes: int
    seconds: float
    cached: bool  # True: nothing was downloaded

    def to_dict(self) -> dict[str, object]:
        return {"engine": self.engine, "version": self.version, "path": str(self.path),
                "jars": self.jars, "bytes": self.bytes, "seconds": round(self.seconds, 2),
                "cached": self.cached}


def cached(engine: str, version: str) -> Fetched | None:
    """The cache entry when it is complete, else None."""
    folder = engine_dir(engine, version)
    try:
        meta = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return Fetched(engine, version, folder, int(meta["jars"]), int(meta["bytes"]), 0.0, True)


def pom(engine: Engine, version: str) -> str:
    deps = "".join(
        f"<dependency><groupId>{escape(g)}</groupId><artifactId>{escape(a)}</artifactId>"
        f"<version>{escape(v)}</version></dependency>\n"
        for g, a, v in engine.coordinates(version))
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>\n'
            f"<groupId>msgctl.infra</groupId><artifactId>{engine.name}</artifactId>"
            "<version>1</version><packaging>pom</packaging>\n"
            f"<dependencies>\n{deps}</dependencies></project>\n")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_DOWNLOADED = re.compile(r"Downloaded from \S+: \S+/([^/\s]+) \(")


def fetch(name: str, version: str | None = None,
          on_progress: Callable[[str], None] | None = None) -> Fetched:
    """Make sure the engine's jars are in the cache; run Maven only when they are not."""
    engine = CATALOG[name]
    version = version or engine.default_version
    if engine.source != "maven":
        raise MsgctlError(f"{name} is not fetched by msgctl (it comes from the OS)")
    hit = cached(name, version)
    if hit is not None:
        return hit
    root = cache_root()
    with _locked(root / f".{name}-{version}.lock"):
        hit = cached(name, version)  # someone else finished it while we waited
        if hit is not None:
            return hit
        return _run_maven(engine, version, on_progress)


def _run_maven(engine: Engine, version: str,
               on_progress: Callable[[str], None] | None) -> Fetched:
    mvn = shutil.which("mvn")
    first = ":".join(engine.coordinates(version)[0])
    if mvn is None:
        raise MsgctlError(f"cannot fetch {engine.name} {version}: 'mvn' (Maven) is not on PATH; "
                          "install it, or point the topology at a running engine with "
                          "'external:'")
    final = engine_dir(engine.name, version)
    work = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "pom.xml").write_text(pom(engine, version))
    log_path = final.with_name(f"{final.name}.mvn.log")
    t0 = time.monotonic()
    downloads = 0
    # -B: plain lines we can follow; the "Downloaded from" lines are the progress
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [mvn, "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={work / 'lib'}", "-DincludeScope=runtime"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=str(work))
        assert proc.stdout is not None
        errors: list[str] = []
        for line in proc.stdout:
            log.write(line)
            if line.startswith("[ERROR]") and len(errors) < 3:
                errors.append(line[7:].strip())
            match = _DOWNLOADED.search(line)
            if match and on_progress is not None:
                downloads += 1
                on_progress(f"downloaded {downloads}: {match.group(1)}")
        code = proc.wait()
    jars = sorted((work / "lib").glob("*.jar"))
    if code != 0 or not jars:
        shutil.rmtree(work, ignore_errors=True)
        reason = next((e for e in errors if e), f"mvn exited {code}")
        if len(reason) > 240:
            reason = reason[:237] + "..."
        raise MsgctlError(f"cannot fetch {engine.name} {version} ({first}): {reason}; see "
                          f"{log_path}; or point the topology at a running {engine.name} "
                          "with 'external:'")
    size = sum(j.stat().st_size for j in jars)
    seconds = time.monotonic() - t0
    (work / MARKER).write_text(json.dumps({
        "engine": engine.name, "version": version, "jars": len(jars), "bytes": size,
        "seconds": round(seconds, 1), "fetched_at": time.time(),
        "artifacts": [":".join(c) for c in engine.coordinates(version)]}, indent=2))
    shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover without its marker
    os.replace(work, final)
    return Fetched(engine.name, version, final, len(jars), size, seconds, False)
