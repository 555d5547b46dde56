"""What runs in a deployment and how it is doing, as data.

`runtime_rows` flattens the supervisor's state into one row per runtime (state,
pid, uptime, restarts, endpoint); `replication_links` measures MirrorMaker 2 lag
between regions; `push_queue_depths` scrapes each push runtime's ``/metrics``;
`faults_in_force` reads the chaos ledger; `report` is all of it, as
``msgctl status --json`` prints it.
"""

from __future__ import annotations

import time
from typing import Any

from msgctl import topology as topo_mod
from msgctl.deploy import metrics
from msgctl.errors import MsgctlError
from msgctl.home import Home
from msgctl.infra import replication
from msgctl.supervisor import client
from msgctl.supervisor.daemon import FATAL, RUNNING
from msgctl.supervisor.program import ENGINE
from msgctl.tls import trust


def runtime_rows(state: dict[str, Any] | None, running: bool) -> list[dict[str, Any]]:
    """One row per runtime of every program in the supervisor's `state`."""
    rows = []
    now = time.time()
    for p in (state or {}).get("programs", []):
        single = len(p["runtimes"]) == 1
        for runtime, rstate in p["runtimes"].items():
            # FATAL outlives the supervisor: `up` gave up on it, and that is the news
            pstate = p["state"] if running or p["state"] == FATAL else "STOPPED"
            shown = pstate
            if pstate == RUNNING and rstate not in ("ready", "-"):
                shown = rstate.upper()
            up_for = now - p["started_at"] if running and p["started_at"] and pstate in (
                RUNNING,) else None
            engine = p.get("kind") == ENGINE
            rows.append({
                # a process of its own (gateway-2.local, kafka.local) is named as its program
                "region": p["region"], "runtime": p["name"] if single else
                f"{runtime}.{p['region']}", "program": p["name"],
                "kind": p.get("kind", "runtime"), "state": shown,
                "pid": p["pid"] if running else None,
                "uptime_s": round(up_for, 1) if up_for is not None else None,
                "restarts": p["restarts"],
                "endpoint": p["endpoint"] if runtime in ("gateway", "agent") or engine else None,
                "message": p.get("message", ""),
            })
    return rows


def faults_in_force(h: Home) -> list[dict[str, Any]]:
    """The chaos faults the ledger of `h` holds (injected and not healed)."""
    from chaos.ledger import Ledger

    return [e.public() for e in Ledger.load(h.run).faults]


def replication_links(deployment: dict[str, Any]) -> list[replication.LinkLag]:
    """Lag of every MirrorMaker 2 link of a multi-region cluster (none otherwise)."""
    regions = deployment.get("regions", [])
    if deployment.get("backend") != "cluster" or len(regions) < 2:
        return []
    return replication.links(regions)


def push_queue_depths(deployment: dict[str, Any]) -> dict[str, int | None]:
    """Each region's push queue depth, from its push runtime's /metrics (None: no answer)."""
    out: dict[str, int | None] = {}
    cluster = deployment.get("backend") == "cluster"
    for r in deployment.get("regions", []):
        port = r["gateway_port"] + (topo_mod.RUNTIME_PORT_OFFSETS["push"] if cluster else 0)
        out[r["name"]] = None
        # the embedded node's metrics are on its gateway port: TLS when the gateway has it
        tls = None if cluster else trust(deployment)
        text = metrics.scrape(r["host"], port, timeout=1, tls=tls)
        if text is None:
            continue
        depth = metrics.sample(text, "msgctl_push_queue")
        if depth is not None:
            out[r["name"]] = int(depth)
    return out


def current(h: Home) -> tuple[list[dict[str, Any]], bool, list[dict[str, Any]]]:
    """Every runtime row, whether the deployment runs (its supervisor here does, whatever
    its agents answer), and its agents (one row each: region, address, state, version,
    since when and why unreachable; none without agents). A deployment with agents is
    asked through them; a region whose agent does not answer shows the agent OFFLINE
    (the message says why) and its other programs UNKNOWN."""
    running = h.supervisor_pid() is not None
    state = client.read_state(h)
    if not running or not client.has_agents(h.deployment()):
        return runtime_rows(state, running), running, []
    from msgctl.agent import transport  # grpc loads only where there are agents

    agents = transport.agents_of(h.deployment())
    try:
        with transport.Agents(h) as conn:
            programs, agent_rows = transport.status_all(h, conn)
    except MsgctlError as exc:  # no operator certificate: every agent is out of reach
        programs = []
        agent_rows = [{"region": a.region, "address": a.address, "state": "refused",
                       "version": None, "since": None, "reason": str(exc), "error": str(exc)}
                      for a in agents]
    down = {a["region"]: a for a in agent_rows if a["state"] != "up"}
    # what this host's state file says of the regions no agent answered for
    unknown = [{**p, "state": "UNKNOWN", "pid": None, "started_at": None}
               for p in (state or {}).get("programs", [])
               if p.get("region") in down and p.get("name") != f"agent.{p.get('region')}"]
    rows = runtime_rows({"programs": programs + unknown}, True)
    for region, a in down.items():
        since = (f"since {time.strftime('%H:%M:%S', time.localtime(a['since']))}: "
                 if a.get("since") else "")
        rows.insert(0, {"region": region, "runtime": f"agent.{region}",
                        "program": f"agent.{region}", "kind": "agent",
                        "state": "OFFLINE", "pid": None, "uptime_s": None,
                        "restarts": 0, "endpoint": a["address"],
                        "message": f"{a['state']} {since}{a.get('reason') or a['error']}"})
    return rows, running, agent_rows


def report(h: Home) -> dict[str, Any]:
    """The whole status of the deployment under `h` (``msgctl status --json``)."""
    deployment = h.deployment() or {}
    rows, running, agents = current(h)
    return {"home": str(h.root), "running": running, "topology": deployment.get("name"),
            "regions": deployment.get("regions", []),
            "runtimes": rows, **({"agents": agents} if agents else {}),
            "push_queue": push_queue_depths(deployment) if running and
            deployment.get("scope") != "engines" else {},
            "replication": [link.to_dict() for link in replication_links(deployment)]
            if running else [],
            "faults": faults_in_force(h)}


def program_views(programs: list[dict[str, Any]], running: bool = True) -> list[dict[str, Any]]:
    """The supervisor's programs as the action verbs' ``--json`` lists them (an engine the
    supervisor warmed up, msgctl.infra.warmup, with how that went)."""
    return [{"name": p["name"], "region": p["region"], "kind": p.get("kind", "runtime"),
             "state": p["state"] if running or p["state"] == FATAL else "STOPPED",
             "pid": p["pid"] if running else None, "restarts": p.get("restarts", 0),
             "runtimes": [f"{r}.{p['region']}" for r in p["runtimes"]],
             **({"warmup": p["warmup"]} if p.get("warmup") else {})}
            for p in programs]


def action_report(h: Home, verb: str, ok: bool, changed: list[str],
                  programs: list[dict[str, Any]] | None = None,
                  **extra: Any) -> dict[str, Any]:
    """The ``--json`` answer of every action verb (up, down, restart, stop, start, kill,
    infra start|stop): `ok`, the verb, the home, the programs it acted on (`changed`) and
    every program as it is now (`programs`: the supervisor's reply, else its state file),
    then what is particular to the verb."""
    running = h.supervisor_pid() is not None
    if programs is None:
        programs = (client.read_state(h) or {}).get("programs", [])
    return {"ok": ok, "verb": verb, "home": str(h.root), "running": running,
            "changed": changed, "programs": program_views(programs, running), **extra}
