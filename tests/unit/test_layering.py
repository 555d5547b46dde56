"""The layers of `runtime/`: who may import whom (read from the source, nothing runs).

core is pure and imports only core and the port records (dataclasses, no I/O);
adapters implement ports and import no runtime; runtimes reach backends only
through ports, except the composition roots and the cluster runtimes (which are
Kafka/Redis-specific by nature).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"

# modules that hold runtimes (or their composition): adapters must not import these
RUNTIMES = ("runtime.sequencer", "runtime.sequencing", "runtime.presence", "runtime.push",
            "runtime.gateway", "runtime.cluster", "runtime.node", "runtime.cluster_node")
# the only places that may name a concrete adapter
COMPOSITION = {"runtime/node.py", "runtime/cluster_node.py"}


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "runtime" or m.startswith("runtime.")}


def modules(folder: Path) -> list[tuple[str, set[str]]]:
    return [(str(p.relative_to(ROOT)), imports(p)) for p in sorted(folder.rglob("*.py"))]


def test_core_is_pure() -> None:
    bad = [(f, m) for f, ms in modules(RUNTIME / "core") for m in ms
           if not (m.startswith("runtime.core") or m == "runtime.ports")]
    assert bad == [], "runtime/core imports outside the core"
    # and the port module itself does no I/O: it may lean on the core only
    assert {m for m in imports(RUNTIME / "ports.py") if not m.startswith("runtime.core")} == set()


def test_adapters_import_no_runtime() -> None:
    bad = [(f, m) for f, ms in modules(RUNTIME / "adapters") for m in ms
           if m.startswith(RUNTIMES)]
    assert bad == []


def test_only_composition_roots_and_cluster_runtimes_name_adapters() -> None:
    bad = []
    for f, ms in modules(RUNTIME):
        if f.startswith(("runtime/adapters/", "runtime/cluster/")) or f in COMPOSITION:
            continue
        bad += [(f, m) for m in ms if m.startswith("runtime.adapters")]
    assert bad == []


def test_the_gateway_is_written_against_ports_only() -> None:
    # whichever family composes it: no concrete runtime or adapter in its imports
    bad = [(f, m) for f, ms in modules(RUNTIME / "gateway") for m in ms
           if m.startswith(("runtime.adapters", "runtime.sequencer", "runtime.cluster",
                            "runtime.presence", "runtime.push"))]
    assert bad == []
