"""`msgctl agent serve`: one region's agent, a gRPC server (grpc.aio) under mutual TLS.

It serves the msgctl.v1 Supervisor, Logs and Chaos services for its region, the standard
grpc.health.v1 health service and server reflection. Clients must present a certificate
the deployment's CA signed (`msgctl ca show`); others fail the TLS handshake.

The region's programs are the host supervisor's: the agent acts on them through the
supervisor's control socket, scoped to its region (a glob never reaches another region's
programs), and streams its region's log files. Faults are the host's: any of its agents
applies them. The agent runs outside its region's cgroup, so a drill's partition never
cuts the operator off from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from msgctl import __version__
from msgctl.agent import convert
from msgctl.agent.transport import VERSION_KEY
from msgctl.deploy import logs as logs_mod
from msgctl.errors import EXIT_USAGE, MsgctlError
from msgctl.home import Home
from msgctl.supervisor import client
from msgctl.supervisor.program import Program
from msgctl.supervisor.program import match as match_programs
from msgctl.v1 import agent_pb2 as pb
from msgctl.v1 import agent_pb2_grpc as rpc

# operators' CLIs ping every 10 s on a quiet `logs -f` (to notice a lost agent): allow it
SERVER_OPTIONS = [("grpc.so_reuseport", 0),  # a second agent on one address must fail
                  ("grpc.keepalive_permit_without_calls", 1),
                  ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                  ("grpc.http2.max_ping_strikes", 0)]


class Scope:
    """The agent's region on its host: its programs and the supervisor's socket."""

    def __init__(self, home: Home, region: str, address: str) -> None:
        self.home = home
        self.region = region
        self.address = address

    def programs(self) -> list[Program]:
        from msgctl.supervisor.daemon import load_plan

        # not the agents: one cannot restart, stop or signal itself in the middle of a
        # call (`msgctl stop agent.*` goes to the supervisor's socket)
        return [p for p in load_plan(self.home) if p.region == self.region
                and p.runtimes != ["agent"]]

    async def match(self, context: grpc.aio.ServicerContext, pattern: str) -> list[str]:
        """The region's programs `pattern` matches; a call ends (FAILED_PRECONDITION) when
        the host's supervisor is not running (an agent outlives `msgctl down`)."""
        if self.home.supervisor_pid() is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"nothing is running under {self.home.root} (run 'msgctl up')")
        return match_programs(self.programs(), pattern) if pattern else []

    async def command(self, context: grpc.aio.ServicerContext, op: str,
                      **args: Any) -> dict[str, Any]:
        """`op` on the host's supervisor; its refusal ends the call with a status."""
        remaining = context.time_remaining()
        timeout = max(5.0, remaining - 1.0) if remaining is not None else 240.0
        try:
            return await asyncio.to_thread(client.socket_command, self.home, op, timeout, **args)
        except MsgctlError as exc:
            code = (grpc.StatusCode.INVALID_ARGUMENT if exc.code == EXIT_USAGE
                    else grpc.StatusCode.FAILED_PRECONDITION)
            await context.abort(code, exc.message)
            raise  # abort raises; this keeps type checkers sure

    def mine(self, programs: list[dict[str, Any]]) -> list[pb.Program]:
        return [convert.program_to_pb(p) for p in programs if p.get("region") == self.region]


async def _hello(context: grpc.aio.ServicerContext) -> None:
    """Every answer carries the agent's version: the CLI reports a mismatch."""
    with contextlib.suppress(Exception):  # already sent, or the call is gone
        await context.send_initial_metadata(((VERSION_KEY, __version__),))


class SupervisorService(rpc.SupervisorServicer):
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def Status(self, request: pb.StatusRequest,  # noqa: N802 (the API's names)
                     context: grpc.aio.ServicerContext) -> pb.StatusReply:
        await _hello(context)
        if self.scope.home.supervisor_pid() is None:  # `msgctl down`: the agent stays
            return pb.StatusReply(region=self.scope.region, version=__version__,
                                  address=self.scope.address)
        reply = await self.scope.command(context, "status")
        chaos = {str(k): str(v) for k, v in (reply.get("chaos") or {}).items()}
        return pb.StatusReply(region=self.scope.region, version=__version__,
                              address=self.scope.address,
                              supervisor_pid=int(reply.get("pid") or 0),
                              shutting_down=bool(reply.get("shutting_down")),
                              programs=self.scope.mine(reply.get("programs", [])),
                              chaos=chaos)

    async def _verb(self, op: str, request: pb.ProgramsRequest,
                    context: grpc.aio.ServicerContext) -> pb.ActionReply:
        await _hello(context)
        names = await self.scope.match(context, request.glob or ("*" if op == "restart"
                                                                  else ""))
        if not names:  # nothing of this region: not an error here, the CLI decides
            return pb.ActionReply()
        args: dict[str, Any] = {"names": names, "glob": request.glob}
        if op == "restart":
            args["dependents"] = request.dependents
        reply = await self.scope.command(context, op, **args)
        changed = reply.get("restarted", reply.get("changed", []))
        return pb.ActionReply(matched=names, changed=changed,
                              dependents=reply.get("dependents", []),
                              programs=self.scope.mine(reply.get("programs", [])))

    async def Start(self, request: pb.ProgramsRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> pb.ActionReply:
        return await self._verb("start", request, context)

    async def Stop(self, request: pb.ProgramsRequest,  # noqa: N802
                   context: grpc.aio.ServicerContext) -> pb.ActionReply:
        return await self._verb("stop", request, context)

    async def Restart(self, request: pb.ProgramsRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> pb.ActionReply:
        return await self._verb("restart", request, context)

    async def Signal(self, request: pb.SignalRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> pb.ActionReply:
        await _hello(context)
        names = await self.scope.match(context, request.glob)
        if not names:
            return pb.ActionReply()
        reply = await self.scope.command(context, "kill", glob=request.glob, names=names,
                                         signal=request.signal or "KILL")
        signalled = reply.get("signalled", [])
        return pb.ActionReply(matched=reply.get("matched", names),
                              changed=[s["name"] for s in signalled],
                              pids=[int(s["pid"]) for s in signalled],
                              signal=str(reply.get("signal", "")),
                              programs=self.scope.mine(reply.get("programs", [])))


class LogsService(rpc.LogsServicer):
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def Follow(self, request: pb.FollowRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.LogLine]:
        await _hello(context)
        try:
            keep = logs_mod.Filter(since=request.since or None, region=self.scope.region,
                                   level=request.level or None,
                                   grep=re.compile(request.grep) if request.grep else None)
        except (ValueError, re.error) as exc:  # a bad level or expression
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad filter: {exc}")
        if request.lines < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "lines must be 0 or more")
        # the files are read in a thread of the stream's own (not the shared pool: a
        # quiet `logs -f` would hold a pool thread for as long as it lasts)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[logs_mod.Line | None | BaseException] = asyncio.Queue(1000)
        stop = threading.Event()
        history_end = object()

        def put(item: object) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)  # type: ignore[arg-type]
            while not stop.is_set():
                try:
                    fut.result(timeout=0.5)
                    return
                except TimeoutError:
                    continue  # a slow reader: wait, unless the call ended

        def read() -> None:
            try:
                for line in logs_mod.stream(self.scope.home.logs, request.glob or "*", keep,
                                            request.lines, request.follow,
                                            [self.scope.region], stopped=stop.is_set,
                                            history_end=history_end):
                    put(line)
                put(None)
            except BaseException as exc:  # noqa: BLE001 (handed to the call)
                put(exc)

        reader = threading.Thread(target=read, name="logs-follow", daemon=True)
        reader.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if item is history_end:
                    yield pb.LogLine()
                    continue
                if isinstance(item, BaseException):
                    await context.abort(grpc.StatusCode.INTERNAL, f"reading logs: {item}")
                yield convert.line_to_pb(item)  # type: ignore[arg-type]
        finally:
            stop.set()  # the client went away: the reading thread ends at its next poll


class ChaosService(rpc.ChaosServicer):
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def Apply(self, request: pb.ApplyRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> pb.Fault:
        await _hello(context)
        reply = await self.scope.command(context, "chaos_apply",
                                         fault=convert.dict_of(request.fault))
        return convert.fault_to_pb(reply["fault"])

    async def Heal(self, request: pb.HealRequest,  # noqa: N802
                   context: grpc.aio.ServicerContext) -> pb.HealReply:
        await _hello(context)
        reply = await self.scope.command(context, "chaos_heal", id=request.id or None)
        return pb.HealReply(healed=[convert.fault_to_pb(f) for f in reply.get("healed", [])],
                            in_force=[convert.fault_to_pb(f) for f in reply.get("faults", [])])

    async def List(self, request: pb.ListRequest,  # noqa: N802
                   context: grpc.aio.ServicerContext) -> pb.ListReply:
        await _hello(context)
        reply = await self.scope.command(context, "chaos_list")
        host = {k: str(v) for k, v in reply.items() if k not in ("ok", "faults")}
        return pb.ListReply(in_force=[convert.fault_to_pb(f) for f in reply.get("faults", [])],
                            host=host)


def server_credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:
    """Mutual TLS: the agent's certificate, and clients must present one `ca` signed."""
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                       root_certificates=ca.read_bytes(),
                                       require_client_auth=True)


async def serve(home: Home, region: str, listen: str, ca: Path, cert: Path, key: Path,
                stop: asyncio.Event | None = None) -> int:
    scope = Scope(home, region, listen)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    rpc.add_SupervisorServicer_to_server(SupervisorService(scope), server)
    rpc.add_LogsServicer_to_server(LogsService(scope), server)
    rpc.add_ChaosServicer_to_server(ChaosService(scope), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = [pb.DESCRIPTOR.services_by_name[s].full_name
             for s in ("Supervisor", "Logs", "Chaos")]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    try:
        credentials = server_credentials(ca, cert, key)
    except OSError as exc:
        print(f"msgctl: the agent cannot read its certificate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        print(f"msgctl: the agent cannot listen on {listen} ({exc}); is one running there "
              "already? ('msgctl agent list')", file=sys.stderr)
        return EXIT_USAGE
    await server.start()
    for name in ["", *names]:
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(f"msgctl agent {__version__}: region {region} on {listen} (mutual TLS)",
          flush=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await checker.enter_graceful_shutdown()
    await server.stop(grace=2.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msgctl.agent.server")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--region", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--ca", required=True, type=Path)
    parser.add_argument("--cert", required=True, type=Path)
    parser.add_argument("--key", required=True, type=Path)
    a = parser.parse_args(argv)
    return asyncio.run(serve(Home(a.home), a.region, a.listen, a.ca, a.cert, a.key))


if __name__ == "__main__":
    sys.exit(main())
