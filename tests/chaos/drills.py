"""Helpers for the drill tests: a bundled drill made shorter, run through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chaos import drill
from tests.conftest import msgctl


def shortened(name: str, folder: Path, **changes: Any) -> Path:
    """A copy of a bundled drill with `changes` applied (dotted keys, e.g. traffic.duration;
    faults.0.at for the first fault's time)."""
    raw = yaml.safe_load(drill.bundled()[name].read_text())
    for key, value in changes.items():
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(home: Path, drill_file: Path | str, out: Path, timeout: float = 600,
        seed: int = 7) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = msgctl("drill", "run", str(drill_file), "--home", str(home), "--out", str(out),
                  "--seed", str(seed), "--json", check=False, timeout=timeout)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no JSON result (exit {proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}") from None
    return proc, result


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
