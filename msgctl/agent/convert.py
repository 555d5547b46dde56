"""The agent API's messages (msgctl.v1) to and from the dicts the supervisor speaks.

The supervisor's control socket answers with plain JSON (`msgctl.supervisor.daemon`);
the agents carry the same facts as typed protobuf messages. These functions are the
one place the two shapes meet, both ways, so the CLI reads the same dicts whichever
transport a deployment uses.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from msgctl.deploy.logs import Line
from msgctl.v1 import agent_pb2 as pb


def program_to_pb(view: dict[str, Any]) -> pb.Program:
    last_exit = view.get("last_exit")
    return pb.Program(
        name=str(view["name"]), region=str(view.get("region", "")),
        kind=str(view.get("kind", "runtime")), state=str(view.get("state", "")),
        pid=int(view.get("pid") or 0), restarts=int(view.get("restarts") or 0),
        started_at=float(view.get("started_at") or 0.0),
        ready_after=float(view.get("ready_after") or 0.0),
        endpoint=str(view.get("endpoint") or ""), message=str(view.get("message") or ""),
        runtimes=[pb.Runtime(name=str(k), state=str(v))
                  for k, v in (view.get("runtimes") or {}).items()],
        last_exit=int(last_exit) if last_exit is not None else 0,
        has_last_exit=last_exit is not None)


def program_from_pb(p: pb.Program) -> dict[str, Any]:
    return {"name": p.name, "region": p.region,
            "runtimes": {r.name: r.state for r in p.runtimes},
            "state": p.state, "pid": p.pid or None, "started_at": p.started_at or None,
            "ready_after": p.ready_after or None, "restarts": p.restarts,
            "endpoint": p.endpoint, "last_exit": p.last_exit if p.has_last_exit else None,
            "message": p.message, "kind": p.kind}


def fault_to_pb(entry: dict[str, Any]) -> pb.Fault:
    return pb.Fault(id=str(entry.get("id", "")), kind=str(entry.get("kind", "")),
                    description=str(entry.get("description", "")),
                    targets=[str(t) for t in entry.get("targets") or []],
                    started=float(entry.get("started") or 0.0),
                    expires=float(entry.get("expires") or 0.0),
                    healed=float(entry.get("healed") or 0.0), note=str(entry.get("note") or ""))


def fault_from_pb(f: pb.Fault) -> dict[str, Any]:
    return {"id": f.id, "kind": f.kind, "description": f.description,
            "targets": list(f.targets), "started": f.started, "expires": f.expires or None,
            "healed": f.healed or None, "note": f.note or None}


def struct_of(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def dict_of(value: struct_pb2.Struct) -> dict[str, Any]:
    raw = json_format.MessageToDict(value)
    # Struct numbers are doubles: whole ones come back as the ints a fault spec holds
    return {k: _whole(v) for k, v in raw.items()}


def _whole(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _whole(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_whole(x) for x in v]
    return v


def line_to_pb(line: Line) -> pb.LogLine:
    return pb.LogLine(log=line.log, region=line.region or "", time=line.time or 0.0,
                      level=line.level or "", text=line.text, raw=line.raw,
                      own_time=line.own_time)


def line_from_pb(m: pb.LogLine) -> Line:
    return Line(m.log, m.region or None, m.time or None, m.level or None, m.text, m.raw,
                m.own_time)
