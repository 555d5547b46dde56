"""The agent API's generated code is what scripts/gen-proto makes from proto/, and the
conversions between its messages and the supervisor's dicts lose nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from msgctl.agent import convert
from msgctl.deploy.logs import Line

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_code_is_current(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path / 'proto'}",
                    f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                    str(tmp_path / "proto" / "msgctl" / "v1" / "agent.proto")], check=True)
    made = sorted(p.name for p in (out / "msgctl" / "v1").iterdir())
    assert made == ["agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py"]
    for name in made:
        assert (out / "msgctl" / "v1" / name).read_bytes() == (
            ROOT / "msgctl" / "v1" / name).read_bytes(), (
            f"msgctl/v1/{name} is stale: run scripts/gen-proto")


def test_program_round_trip_keeps_runtime_order() -> None:
    view = {"name": "node.east", "region": "east", "kind": "runtime", "state": "RUNNING",
            "pid": 42, "restarts": 2, "started_at": 1.5, "ready_after": 0.25,
            "endpoint": "ws://x", "message": "", "last_exit": 0,
            "runtimes": {"sequencer": "ready", "presence": "ready", "push": "-",
                         "gateway": "starting"}}
    back = convert.program_from_pb(convert.program_to_pb(view))
    assert back == view and list(back["runtimes"]) == list(view["runtimes"])
    stopped = {**view, "pid": None, "started_at": None, "ready_after": None,
               "last_exit": None}
    assert convert.program_from_pb(convert.program_to_pb(stopped)) == stopped


def test_fault_spec_survives_the_struct() -> None:
    spec = {"kind": "link", "targets": ["a", "b"], "duration": 30,
            "options": {"latency_ms": 200, "jitter_ms": 0, "loss": 0.5, "one_way": False}}
    assert convert.dict_of(convert.struct_of(spec)) == spec


def test_log_line_round_trip() -> None:
    line = Line("gateway.east", "east", 12.5, "info", "ready", '{"msg": "ready"}', True)
    assert convert.line_from_pb(convert.line_to_pb(line)) == line
    bare = Line("supervisor", None, None, None, "x", "x", False)
    assert convert.line_from_pb(convert.line_to_pb(bare)) == bare
