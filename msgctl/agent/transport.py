"""The operator's side of the agents: mutual-TLS channels to each region's agent, and the
supervisor's commands carried over them.

A deployment whose regions name an `agent:` address is controlled only through its
agents: `command(home, op, ...)` here answers with the dict the supervisor's control
socket would, so every verb (status, restart, stop, start, kill, chaos, drills) reads
the same shape whichever transport carries it. A command aimed at a region whose agent
does not answer is one readable error; `status` shows that agent as a row instead.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from msgctl import __version__
from msgctl.agent import convert
from msgctl.errors import EXIT_NOT_RUNNING, EXIT_USAGE, MsgctlError
from msgctl.home import Home, write_private
from msgctl.v1 import agent_pb2 as pb
from msgctl.v1 import agent_pb2_grpc as rpc

VERSION_KEY = "msgctl-version"
CONNECT_TIMEOUT = 5.0
# a quiet `logs -f` notices an agent that went away within ~15 s (the agents allow it)
CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                   ("grpc.keepalive_permit_without_calls", 1)]


def tls_refused(exc: grpc.RpcError) -> bool:
    """The call failed in the TLS handshake: a certificate one side refused. An agent that
    refuses the client's certificate just closes the connection (TLS 1.3 checks it after
    the client is done), which the client sees as "Socket closed" on connecting."""
    low = str(exc.details() or "").lower()
    return any(w in low for w in ("handshake", "ssl", "certificate", "tls", "socket closed"))


@dataclass(frozen=True)
class Agent:
    """One region's agent, as the deployment names it."""

    region: str
    address: str


@dataclass(frozen=True)
class Credentials:
    """The deployment's CA and the operator's client certificate (`msgctl ca show`)."""

    ca: Path
    cert: Path
    key: Path

    def channel(self, address: str) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(), private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes())
        return grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)


def agents_of(deployment: dict[str, Any] | None) -> list[Agent]:
    """The agents a deployment's regions name (none: it is controlled through its local
    supervisor's socket)."""
    return [Agent(str(r["name"]), str(r["agent"]))
            for r in (deployment or {}).get("regions", [])
            if isinstance(r, dict) and r.get("agent")]


def credentials(deployment: dict[str, Any]) -> Credentials:
    info = deployment.get("agents") or {}
    try:
        return Credentials(Path(info["ca"]), Path(info["client_cert"]),
                           Path(info["client_key"]))
    except KeyError:
        raise MsgctlError("the deployment names agents but no operator certificate; run "
                          "'msgctl ca init' and 'msgctl up' again") from None


def version_note(region: str, theirs: str) -> str | None:
    """What to tell the operator when an agent runs another msgctl than this CLI (None:
    the same). Only major.minor matter: the API is compatible within them."""
    if not theirs or theirs.split(".")[:2] == __version__.split(".")[:2]:
        return None
    return (f"the agent of {region} runs msgctl {theirs} and this CLI is {__version__}; "
            "upgrade the older one")


def _reason(exc: grpc.RpcError) -> str:
    """Why a call failed, in a few words."""
    code = exc.code()
    text = str(exc.details() or "")
    low = text.lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "deadline" in low:
        return "no answer in time"
    if "connection refused" in low:
        return "connection refused"
    if "socket closed" in low:
        return ("it closed the connection in the TLS handshake (is this CLI's certificate "
                "from the deployment's CA?)")
    if tls_refused(exc):
        return "TLS handshake failed (is it this deployment's agent, and this its CA?)"
    if "no route" in low or "unreachable" in low:
        return "no route to it"
    return text.splitlines()[0][:100] if text else str(code)


class Unreachable(MsgctlError):
    """An agent did not answer (one line; exit 1)."""


class Refused(MsgctlError):
    """An agent and this CLI did not accept each other's certificate (one line; exit 1)."""


class Agents:
    """The deployment's agents, with one channel each, opened on first use."""

    def __init__(self, home: Home, deployment: dict[str, Any] | None = None) -> None:
        self.home = home
        self.deployment = deployment if deployment is not None else (home.deployment() or {})
        self.list = agents_of(self.deployment)
        self._creds = credentials(self.deployment) if self.list else None
        self._channels: dict[str, grpc.Channel] = {}
        self.notes: list[str] = []  # version mismatches seen

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> Agents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def by_region(self, region: str) -> Agent:
        for a in self.list:
            if a.region == region:
                return a
        raise MsgctlError(f"no agent for region '{region}' (regions with agents: "
                          f"{', '.join(a.region for a in self.list) or 'none'})", EXIT_USAGE)

    def _channel(self, agent: Agent) -> grpc.Channel:
        if agent.address not in self._channels:
            assert self._creds is not None
            try:
                self._channels[agent.address] = self._creds.channel(agent.address)
            except OSError as exc:
                raise MsgctlError(f"cannot read the operator certificate: {exc}") from None
        return self._channels[agent.address]

    def _seen(self, agent: Agent, call: Any) -> None:
        """Record the agent as reachable and check its version (initial metadata)."""
        with_version = dict(call.initial_metadata() or ())
        note = version_note(agent.region, str(with_version.get(VERSION_KEY, "")))
        if note and note not in self.notes:
            self.notes.append(note)
            print(f"warning: {note}", file=sys.stderr)
        _mark(self.home, agent, None)

    def call(self, agent: Agent, service: str, method: str, request: Any,
             timeout: float) -> Any:
        """One unary call; an agent that does not answer is `Unreachable` (exit 1), a
        refusal the agent's own error (exit 2 for bad input, else 1)."""
        stub_cls = {"Supervisor": rpc.SupervisorStub, "Chaos": rpc.ChaosStub}[service]
        stub = stub_cls(self._channel(agent))
        try:
            reply, call = getattr(stub, method).with_call(
                request, timeout=timeout, metadata=((VERSION_KEY, __version__),))
        except grpc.RpcError as exc:
            raise self._error(agent, exc) from None
        self._seen(agent, call)
        return reply

    def _error(self, agent: Agent, exc: grpc.RpcError) -> MsgctlError:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED or (
                code == grpc.StatusCode.UNAVAILABLE and tls_refused(exc)):
            return Refused(f"the agent of {agent.region} at {agent.address} and this CLI "
                           f"refused each other: {_reason(exc)}")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            since = _mark(self.home, agent, _reason(exc))
            return Unreachable(f"the agent of {agent.region} at {agent.address} is "
                               f"unreachable since {_clock(since)}: {_reason(exc)}")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return MsgctlError(str(exc.details()), EXIT_USAGE)
        return MsgctlError(str(exc.details() or code))

    def status(self, agent: Agent, timeout: float = CONNECT_TIMEOUT) -> pb.StatusReply:
        reply: pb.StatusReply = self.call(agent, "Supervisor", "Status", pb.StatusRequest(),
                                          timeout)
        return reply

    def follow(self, agent: Agent, request: pb.FollowRequest) -> Iterator[pb.LogLine]:
        """Logs.Follow of one agent; with `follow` an empty LogLine marks where its
        history ends."""
        stub = rpc.LogsStub(self._channel(agent))
        stream = stub.Follow(request, metadata=((VERSION_KEY, __version__),),
                             timeout=None if request.follow else 120.0)
        try:
            first = True
            for line in stream:
                if first:
                    self._seen(agent, stream)
                    first = False
                yield line
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._error(agent, exc) from None


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _marks_file(home: Home) -> Path:
    return home.run / "agents.json"


def _mark(home: Home, agent: Agent, reason: str | None) -> float:
    """Remember when an agent first stopped answering (cleared when it answers); the
    time it has been unreachable since."""
    path = _marks_file(home)
    try:
        marks = json.loads(path.read_text())
    except (OSError, ValueError):
        marks = {}
    now = time.time()
    if reason is None:
        if agent.address in marks:
            marks.pop(agent.address)
            _save(path, marks)
        return now
    entry = marks.get(agent.address)
    if not isinstance(entry, dict) or not isinstance(entry.get("since"), int | float):
        entry = {"since": now}
    entry["reason"] = reason
    marks[agent.address] = entry
    _save(path, marks)
    return float(entry["since"])


def _save(path: Path, marks: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(marks))
    except OSError:
        pass  # a read-only home: "since" is then the first time this CLI saw it


# -- the supervisor's commands over the agents ---------------------------------------------

def _programs(reply: Any) -> list[dict[str, Any]]:
    return [convert.program_from_pb(p) for p in reply.programs]


def status_all(home: Home, agents: Agents) -> tuple[list[dict[str, Any]],
                                                    list[dict[str, Any]]]:
    """Every reachable agent's programs, and one row per agent: region, address, state
    (``up``, ``unreachable``), version, and since when / why it is unreachable."""
    programs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for agent in agents.list:
        try:
            reply = agents.status(agent)
        except Unreachable as exc:
            mark = _marks(home).get(agent.address, {})
            rows.append({"region": agent.region, "address": agent.address,
                         "state": "unreachable", "version": None,
                         "since": mark.get("since"), "reason": mark.get("reason"),
                         "error": str(exc)})
            continue
        except MsgctlError as exc:
            rows.append({"region": agent.region, "address": agent.address,
                         "state": "refused", "version": None, "since": None,
                         "reason": str(exc), "error": str(exc)})
            continue
        programs += _programs(reply)
        # an agent whose host supervisor is not running (after `msgctl down`) is idle
        rows.append({"region": agent.region, "address": agent.address,
                     "state": "up" if reply.supervisor_pid else "idle",
                     "version": reply.version, "since": None,
                     "reason": None if reply.supervisor_pid else
                     "its host's supervisor is not running (msgctl up)",
                     "error": None,
                     "supervisor_pid": reply.supervisor_pid})
    return programs, rows


def _marks(home: Home) -> dict[str, Any]:
    try:
        raw = json.loads(_marks_file(home).read_text())
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def _plan_regions(home: Home, pattern: str,
                  exclude: set[str] | None = None) -> set[str] | None:
    """The regions whose programs (in this host's plan) a glob matches; None when the
    plan is not here (the agents then decide)."""
    try:
        raw = json.loads(home.plan_file.read_text())["programs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    out = set()
    for p in raw:
        if p.get("name") in (exclude or set()):
            continue
        names = [p.get("name", "")] + [f"{r}.{p.get('region')}" for r in p.get("runtimes", [])]
        if any(fnmatch.fnmatch(n, pattern) for n in names):
            out.add(str(p.get("region")))
    return out


def command(home: Home, op: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
    """`op` (as the supervisor's control socket takes it) carried over the agents."""
    with Agents(home) as agents:
        if not agents.list:
            raise MsgctlError(f"nothing is running under {home.root} (run 'msgctl up')",
                              EXIT_NOT_RUNNING)
        if op == "status":
            programs, rows = status_all(home, agents)
            if not any(r["state"] == "up" for r in rows):
                raise MsgctlError(next((r["error"] for r in rows if r["error"]),
                                       "no agent's supervisor is running"))
            return {"ok": True, "programs": programs, "agents": rows}
        if op in ("restart", "stop", "start", "kill"):
            return _program_verb(home, agents, op, timeout, args)
        if op in ("chaos_apply", "chaos_heal", "chaos_list"):
            return _chaos(agents, op, timeout, args)
    raise MsgctlError(f"'{op}' does not go through the agents")


def _agent_programs(home: Home, pattern: str) -> list[str]:
    """The agent programs (agent.<region>) of this host's plan a glob matches."""
    try:
        raw = json.loads(home.plan_file.read_text())["programs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(p["name"]) for p in raw if p.get("runtimes") == ["agent"] and (
        fnmatch.fnmatch(p["name"], pattern)
        or fnmatch.fnmatch(f"agent.{p.get('region')}", pattern))]


def _program_verb(home: Home, agents: Agents, op: str, timeout: float,
                  args: dict[str, Any]) -> dict[str, Any]:
    pattern = str(args.get("glob") or ("*" if op == "restart" else ""))
    if not pattern:
        raise MsgctlError(f"no program or runtime matches '{pattern}'", EXIT_USAGE)
    # the agents themselves are this host supervisor's programs: an agent cannot restart
    # or start itself over its own connection, so they go to the supervisor directly
    own = _agent_programs(home, pattern) if home.supervisor_pid() is not None else []
    aimed = _plan_regions(home, pattern, exclude=set(own))
    targets = [a for a in agents.list if aimed is None or a.region in aimed]
    if aimed is not None and not targets and not own:
        raise MsgctlError(f"no program or runtime matches '{pattern}'", EXIT_USAGE)
    matched: list[str] = []
    changed: list[str] = []
    dependents: list[str] = []
    signalled: list[dict[str, Any]] = []
    signal_name = ""

    def local() -> None:
        nonlocal signal_name
        from msgctl.supervisor.client import socket_command

        reply = socket_command(home, op, timeout, glob=pattern, names=own,
                               **({"signal": args.get("signal") or "KILL"} if op == "kill"
                                  else {}))
        matched.extend(own)
        changed.extend(reply.get("restarted", reply.get("changed", [])))
        signalled.extend(reply.get("signalled", []))
        signal_name = signal_name or str(reply.get("signal", ""))

    # agents start before what they serve, and stop (restart, die) after it
    if own and op == "start":
        local()
    # every agent a command is aimed at must answer before any of them acts
    for agent in targets:
        agents.status(agent)
    for agent in targets:
        if op == "kill":
            reply = agents.call(agent, "Supervisor", "Signal", pb.SignalRequest(
                glob=pattern, signal=str(args.get("signal") or "KILL")), timeout)
            signal_name = reply.signal or signal_name
            signalled += [{"name": n, "pid": pid} for n, pid in zip(reply.changed,
                                                                    reply.pids, strict=False)]
        else:
            method = {"restart": "Restart", "stop": "Stop", "start": "Start"}[op]
            reply = agents.call(agent, "Supervisor", method, pb.ProgramsRequest(
                glob=pattern, dependents=bool(args.get("dependents"))), timeout)
        matched += list(reply.matched)
        changed += list(reply.changed)
        dependents += list(reply.dependents)
    if own and op != "start":
        local()
    if not matched:
        raise MsgctlError(f"no program or runtime matches '{pattern}'", EXIT_USAGE)
    programs, _ = status_all(home, agents)
    # the host's own view of what no agent reported (an agent just stopped, its region)
    from msgctl.supervisor.client import read_state

    seen = {p["name"] for p in programs}
    programs += [p for p in (read_state(home) or {}).get("programs", [])
                 if p.get("name") not in seen]
    out: dict[str, Any] = {"ok": True, "programs": programs}
    if op == "restart":
        out |= {"restarted": changed, "dependents": dependents}
    elif op == "kill":
        out |= {"signal": signal_name, "matched": matched, "signalled": signalled}
    else:
        out["changed"] = changed
    return out


def _chaos_agent(agents: Agents, fault: dict[str, Any] | None) -> Agent:
    """Faults are the host's: the agent of the fault's first target region that answers,
    else the first agent that does."""
    wanted = [str(t) for t in (fault or {}).get("targets", [])]
    order = ([a for a in agents.list if a.region in wanted]
             + [a for a in agents.list if a.region not in wanted])
    last: MsgctlError | None = None
    for agent in order:
        try:
            agents.status(agent)
            return agent
        except Unreachable as exc:
            last = exc
    raise last or MsgctlError("no agent answers")


def _chaos(agents: Agents, op: str, timeout: float, args: dict[str, Any]) -> dict[str, Any]:
    fault = args.get("fault") if isinstance(args.get("fault"), dict) else None
    agent = _chaos_agent(agents, fault)
    if op == "chaos_apply":
        if fault is None:
            raise MsgctlError("chaos_apply needs a fault", EXIT_USAGE)
        applied = agents.call(agent, "Chaos", "Apply",
                              pb.ApplyRequest(fault=convert.struct_of(fault)), timeout)
        return {"ok": True, "fault": convert.fault_from_pb(applied)}
    if op == "chaos_heal":
        healed = agents.call(agent, "Chaos", "Heal", pb.HealRequest(id=str(args.get("id")
                                                                            or "")), timeout)
        return {"ok": True, "healed": [convert.fault_from_pb(f) for f in healed.healed],
                "faults": [convert.fault_from_pb(f) for f in healed.in_force]}
    listed = agents.call(agent, "Chaos", "List", pb.ListRequest(), timeout)
    return {"ok": True, "faults": [convert.fault_from_pb(f) for f in listed.in_force],
            **dict(listed.host)}


def healthy(address: str, creds: Credentials, timeout: float = 2.0) -> bool:
    """The agent at `address` answers grpc.health.v1 with SERVING (the supervisor's
    readiness probe of an agent program, and `msgctl agent list`)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with creds.channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except (grpc.RpcError, OSError):
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
