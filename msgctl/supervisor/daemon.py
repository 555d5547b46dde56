"""The supervisor process of one deployment.

It runs the programs of ``run/plan.json`` in dependency order (a program starts
once everything in its ``depends_on`` is RUNNING; independent ones start side
by side), each in its own process group with its output in
``logs/<program>.log``; marks a program RUNNING only when its probe answers
(``/readyz`` for runtimes; CQL, a Kafka metadata request or PING for engines;
never a fixed sleep); restarts
a program that exits with exponential backoff and jitter, up to a retry cap
that ends in FATAL; and on shutdown stops them in reverse order, SIGTERM then
SIGKILL of the group after a timeout. Its view is written to
``run/state.json`` on every change; ``run/supervisor.sock`` takes commands
(status, restart, stop, start, kill, shutdown, and the chaos ones) as JSON
lines.

Everything it writes into the home is private (see `msgctl.home`): it runs
under `PRIVATE_UMASK`, and so does every program it spawns (their data, logs
and sockets are born 0600/0700); the control socket is 0600, and only its
owner may command the deployment through it.

It also owns the deployment's faults (`chaos.host`): programs run in their
region's cgroup when the plan asks for it, faults are applied and healed here
(their timers too), and every fault is healed before the programs stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos.faults import FaultError, signal_number
from chaos.host import ChaosHost, ChaosPlan
from msgctl.home import (
    FILE_MODE,
    PRIVATE_UMASK,
    Home,
    open_private,
    private_umask,
    write_json_atomic,
    write_private,
)
from msgctl.supervisor import priority
from msgctl.supervisor.policy import RestartPolicy, RestartTracker
from msgctl.supervisor.program import ENGINE, Program, engine_dependents
from msgctl.supervisor.program import match as match_programs
from msgctl.tls import client_context
from runtime import lean

STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, FATAL = (
    "STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "FATAL")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PROBE_INTERVAL = 0.1
ENGINE_PROBE_INTERVAL = 0.5  # an engine probe opens a driver connection; no need to hammer
HEALTH_INTERVAL = 2.0
ENGINE_HEALTH_INTERVAL = 10.0


async def probe(url: str, timeout: float = 2.0, ca: str = "") -> dict[str, Any] | None:
    """GET a health URL (https: trusting `ca`, or the system's roots); the JSON body when it
    answers 200, else None."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            parts.hostname, parts.port or (443 if secure else 80),
            ssl=_client_tls(ca) if secure else None), timeout)
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        writer.write(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Connection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)  # Connection: close: until EOF
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or status_line[1] != b"200":
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@functools.cache
def _client_tls(ca: str) -> ssl.SSLContext:
    return client_context(Path(ca) if ca else None)


async def check(program: Program, timeout: float = 1.0, live: bool = False,
                keep: bool = False) -> dict[str, Any] | None:
    """Probe a program as its spec says; the answer (a dict) when ready, else None.
    `live`: a look at a program that was ready once, without an engine's start-time
    steps (msgctl.infra.probes.live_look); `keep`: a Cassandra session stays open for
    the next look (the supervisor's: a login costs the node a bcrypt check)."""
    spec = program.probe_spec
    if spec.get("kind") == "http":
        body = await probe(spec["url"], timeout=timeout, ca=spec.get("ca", ""))
        if body is None or not body.get("ready", True):
            return None
        if program.kind == ENGINE:  # an engine with an HTTP API (Toxiproxy)
            return {"ready": True, "runtimes": {r: "ready" for r in program.runtimes}, **body}
        return body
    if spec.get("kind") == "grpc":  # an agent: grpc.health.v1 under mutual TLS
        from msgctl.agent.transport import Credentials, healthy

        creds = Credentials(Path(spec["ca"]), Path(spec["client_cert"]),
                            Path(spec["client_key"]))
        if not await asyncio.to_thread(healthy, spec["address"], creds, max(timeout, 2.0)):
            return None
        return {"ready": True, "runtimes": {r: "ready" for r in program.runtimes}}
    from msgctl.infra import probes  # the engine drivers load only where engines run

    answer = await probes.check(probes.live_look(spec) if live else spec,
                                timeout=max(timeout, 3.0), keep=keep)
    if answer is None:
        return None
    return {"ready": True, "runtimes": {r: "ready" for r in program.runtimes}, **answer}


class Managed:
    """One program under supervision."""

    def __init__(self, program: Program, home: Home, policy: RestartPolicy) -> None:
        self.program = program
        self.home = home
        self.state = STOPPED
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None
        self.ready_after: float | None = None  # seconds from spawn to the probe passing
        self.tracker = RestartTracker(policy)
        self.runtimes: dict[str, str] = {}
        self.last_exit: int | None = None
        self.message = ""
        self.task: asyncio.Task[None] | None = None
        self.wanted = True
        # its warm-up (first start only): {"state": warming|done|failed|interrupted, ...}
        self.warmup: dict[str, Any] = {}
        self.warming: asyncio.Task[None] | None = None
        self.priority_warned = False  # said once that its `nice` could not be set

    def view(self) -> dict[str, Any]:
        return {
            "name": self.program.name, "region": self.program.region,
            "runtimes": {r: self.runtimes.get(r, "-") for r in self.program.runtimes},
            "state": self.state, "pid": self.proc.pid if self.proc and self.state in (
                STARTING, RUNNING, STOPPING) else None,
            "started_at": self.started_at, "ready_after": self.ready_after,
            "restarts": self.tracker.total,
            "endpoint": self.program.endpoint, "last_exit": self.last_exit,
            "message": self.message, "kind": self.program.kind,
            **({"warmup": self.warmup} if self.warmup else {}),
        }


class Supervisor:
    def __init__(self, home: Home, programs: list[Program],
                 policy: RestartPolicy = RestartPolicy(), *, stop_timeout: float = STOP_TIMEOUT,
                 start_timeout: float = START_TIMEOUT, chaos: ChaosPlan | None = None) -> None:
        self.home = home
        self.chaos = ChaosHost(home.run, chaos, self) if chaos is not None else None
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.managed = {p.name: Managed(p, home, policy) for p in programs}
        self.order = [p.name for p in programs]
        self.shutting_down = False
        self._stop = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    # -- state ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        out = {"pid": os.getpid(), "updated": time.time(), "shutting_down": self.shutting_down,
               "programs": [self.managed[n].view() for n in self.order]}
        if self.chaos is not None:
            out["chaos"] = self.chaos.view()
        return out

    def publish(self) -> None:
        write_json_atomic(self.home.state_file, self.snapshot())

    def _set(self, m: Managed, state: str, message: str = "") -> None:
        m.state = state
        m.message = message
        self.publish()

    # -- one program --------------------------------------------------------
    def _start_timeout(self, m: Managed) -> float:
        return m.program.start_timeout or self.start_timeout

    def _stop_timeout(self, m: Managed) -> float:
        return m.program.stop_timeout or self.stop_timeout

    async def _spawn(self, m: Managed) -> asyncio.subprocess.Process:
        log_path = self.home.logs / f"{m.program.name}.log"
        env = {**os.environ, **m.program.env} if m.program.env else None
        argv = m.program.argv
        if m.program.timer_slack_us:
            argv = priority.with_timer_slack(argv, m.program.timer_slack_us)
        if self.chaos is not None and m.program.cgroup:  # "": outside every region's cgroup
            argv = self.chaos.wrap(m.program.region, m.program.cgroup, argv)
        # the program's output may hold anything it prints: 0600 from its creation; and
        # what the program itself creates (store, engine data, its logs) is private too,
        # whatever umask the supervisor was started with
        with open_private(log_path) as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                cwd=m.program.cwd or str(self.home.root), env=env, umask=PRIVATE_UMASK)
        if not self._warms_up(m):  # an engine's warm-up runs at the default priority
            self._prioritize(m, proc.pid)
        return proc

    def _prioritize(self, m: Managed, pid: int) -> None:
        """Give the program's process its CPU priority (its `nice`); say once per program
        if it cannot."""
        if not m.program.nice:
            return
        # the child is past its exec, so past the setsid that made its scheduling group
        problem = priority.apply(pid, m.program.nice)
        if problem is not None and not m.priority_warned:
            m.priority_warned = True
            print(f"{m.program.name}: runs at the default CPU priority, not nice "
                  f"{m.program.nice} ({problem})", flush=True)

    @staticmethod
    def _warms_up(m: Managed) -> bool:
        """Only an engine's first start warms up: one restarted under live traffic warms
        up on that traffic, and a synthetic load on top would compete with it."""
        return m.program.warmup_s > 0 and m.program.kind == ENGINE and not m.warmup

    async def _wait_ready(self, m: Managed, proc: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + self._start_timeout(m)
        interval = ENGINE_PROBE_INTERVAL if m.program.kind == ENGINE else PROBE_INTERVAL
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                return False
            body = await check(m.program, timeout=1.0, keep=True)
            if body is not None:
                m.runtimes = dict(body.get("runtimes") or {})
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), interval)
        return False

    async def _run_program(self, m: Managed, ready: asyncio.Event) -> None:
        """Start, watch and restart one program until shutdown or FATAL."""
        while m.wanted and not self.shutting_down:
            self._set(m, STARTING)
            try:
                proc = m.proc = await self._spawn(m)
            except OSError as exc:
                m.last_exit = None
                self._set(m, FATAL, f"cannot start: {exc}")
                ready.set()
                return
            m.started_at = time.time()
            self.publish()
            if await self._wait_ready(m, proc):
                m.ready_after = round(time.time() - m.started_at, 2)
                warm = self._warms_up(m)
                if warm:
                    m.warmup = {"state": "warming"}
                self._set(m, RUNNING, "warming up" if warm else "")
                ready.set()
                health = asyncio.create_task(self._watch_health(m))
                m.warming = asyncio.create_task(self._warm_up(m, proc)) if warm else None
                try:
                    await proc.wait()
                finally:  # also when this task is cancelled (stop_program)
                    health.cancel()
                    await self._end_warm_up(m)
            elif proc.returncode is None:
                # never became ready: count it as a failed start
                await self._kill_group(proc, self._stop_timeout(m))
            await proc.wait()
            m.last_exit = proc.returncode
            uptime = time.time() - (m.started_at or time.time())
            m.runtimes = {}
            if self.shutting_down or not m.wanted:
                break
            decision = m.tracker.on_exit(uptime, random.random())
            if decision.fatal:
                self._set(m, FATAL, f"exited {proc.returncode}; gave up after "
                          f"{m.tracker.policy.max_retries} quick restarts")
                ready.set()
                return
            self._set(m, BACKOFF, f"exited {proc.returncode}; restart in {decision.delay:.1f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), decision.delay)
        if m.state != FATAL:
            self._set(m, STOPPED)

    async def _warm_up(self, m: Managed, proc: asyncio.subprocess.Process) -> None:
        """Drive a just-started engine until its JIT settles (msgctl.infra.warmup), with
        the dependents already running; `up` waits for it. A failed warm-up is logged
        and leaves the engine RUNNING: it only costs the first minute's latency.

        It runs in a daemon thread of its own, not the loop's executor: the probes share
        that executor, and a driver call blocked on a dying engine must not hold up the
        supervisor's exit (a cancelled warm-up is told to stop and left to end)."""
        from msgctl.infra import warmup  # the engine drivers load only where engines run

        stop = threading.Event()
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()

        def settle(fut: asyncio.Future[dict[str, Any]], result: Any, failed: bool) -> None:
            if fut.done():
                return
            if failed:
                fut.set_exception(result)
            else:
                fut.set_result(result)

        def drive() -> None:
            try:
                result: Any = warmup.run(m.program.probe_spec, m.program.warmup_s, stop,
                                         proc.pid)
                failed = False
            except Exception as exc:  # noqa: BLE001 - reported through the future
                result, failed = exc, True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, answer, result, failed)

        threading.Thread(target=drive, name=f"warm-up {m.program.name}", daemon=True).start()
        try:
            result = await answer
            m.warmup = {"state": "done", **result,
                        "seconds": round(time.monotonic() - t0, 1)}
        except asyncio.CancelledError:
            stop.set()  # the engine exits or is being stopped: the thread ends on its own
            m.warmup = {"state": "interrupted", "seconds": round(time.monotonic() - t0, 1)}
            self.publish()
            raise
        except Exception as exc:  # noqa: BLE001 - any driver failure
            m.warmup = {"state": "failed", "seconds": round(time.monotonic() - t0, 1),
                        "error": str(exc)[:200]}
        print(f"{m.program.name}: warm-up {json.dumps(m.warmup)}", flush=True)
        # Engines warm up side by side, each until its JIT compiler goes quiet: one
        # favoured meanwhile would starve the others' compilers, which then look quiet
        # before they are done (Kafka's warm-up ended after 27 s instead of 52 s beside a
        # Cassandra at nice -5, and its compilers took 27% of a core in the first traffic)
        if m.proc is proc and proc.returncode is None:  # not a pid the kernel gave away
            self._prioritize(m, proc.pid)
        if m.state == RUNNING and m.proc is proc:
            self._set(m, RUNNING)
        else:
            self.publish()

    async def _end_warm_up(self, m: Managed) -> None:
        """Stop a warm-up still running (before its engine is stopped, or after it exited)."""
        task, m.warming = m.warming, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch_health(self, m: Managed) -> None:
        """Keep the per-runtime view fresh while the program runs."""
        interval = ENGINE_HEALTH_INTERVAL if m.program.kind == ENGINE else HEALTH_INTERVAL
        while True:
            await asyncio.sleep(interval)
            body = await check(m.program, timeout=1.0, live=True, keep=True)
            runtimes = dict(body.get("runtimes") or {}) if body else {
                r: "unhealthy" for r in m.program.runtimes}
            if runtimes != m.runtimes:
                m.runtimes = runtimes
                self.publish()

    async def _kill_group(self, proc: asyncio.subprocess.Process, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        # children the program left behind in its group go too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def start_program(self, name: str) -> None:
        m = self.managed[name]
        m.wanted = True
        m.tracker.reset()
        ready = asyncio.Event()
        m.task = asyncio.create_task(self._run_program(m, ready), name=name)
        await ready.wait()

    async def stop_program(self, name: str) -> None:
        m = self.managed[name]
        m.wanted = False
        await self._end_warm_up(m)  # not stopped under the warm-up's load
        if m.proc is not None and m.proc.returncode is None:
            self._set(m, STOPPING)
            await self._kill_group(m.proc, self._stop_timeout(m))
        if m.task is not None:
            m.task.cancel()
            await asyncio.gather(m.task, return_exceptions=True)
            m.task = None
        if m.state != FATAL:
            self._set(m, STOPPED)

    def live_pid(self, name: str) -> int | None:
        """The pid (and process group) of a program's process while it runs."""
        m = self.managed.get(name)
        if m is None or m.proc is None or m.proc.returncode is not None:
            return None
        return m.proc.pid if m.state in (STARTING, RUNNING) else None

    async def restart(self, names: list[str]) -> None:
        # dependents stop first and start last, as on up and down
        ordered = [n for n in self.order if n in names]
        for name in reversed(ordered):
            await self.stop_program(name)
        for name in ordered:
            await self.start_program(name)

    async def stop_some(self, names: list[str]) -> list[str]:
        """Stop `names` (dependents first) and keep them down until started again; the
        ones that were running."""
        ordered = [n for n in self.order if n in names]
        done = []
        for name in reversed(ordered):
            if self.managed[name].wanted or self.managed[name].state != STOPPED:
                await self.stop_program(name)
                done.append(name)
        return done

    async def start_some(self, names: list[str]) -> list[str]:
        """Start the stopped (or FATAL) ones of `names`, in start order; the ones started."""
        done = []
        for name in [n for n in self.order if n in names]:
            m = self.managed[name]
            if m.state in (STOPPED, FATAL) and (m.task is None or m.task.done()):
                await self.start_program(name)
                done.append(name)
        return done

    # -- whole deployment ---------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        write_private(self.home.pid_file, str(os.getpid()))
        with contextlib.suppress(FileNotFoundError):
            self.home.socket_file.unlink()
        # anyone who can connect can restart or stop the deployment and inject faults: the
        # socket is born under the private umask (no window where others may connect)
        # and then set to 0600
        with private_umask():
            self._server = await asyncio.start_unix_server(self._control,
                                                           str(self.home.socket_file))
        os.chmod(self.home.socket_file, FILE_MODE)
        if self.chaos is not None:
            await asyncio.to_thread(self.chaos.setup)
        self.publish()
        try:
            starting = asyncio.create_task(self.start_all(self.order))
            await self._stop.wait()
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        finally:
            await self.shutdown()
        return 0

    async def start_all(self, names: list[str]) -> None:
        """Start programs, each once its dependencies are RUNNING; independent ones together.

        A program whose dependency ended FATAL is not started (it stays STOPPED with
        a message): it would only fail too, and `up` reports the first FATAL.
        """
        done = {n: asyncio.Event() for n in names}

        async def one(name: str) -> None:
            m = self.managed[name]
            try:
                for dep in m.program.depends_on:
                    if dep in done:
                        await done[dep].wait()
                    dep_state = self.managed[dep].state if dep in self.managed else None
                    if dep_state != RUNNING or self._stop.is_set():
                        self._set(m, STOPPED, f"not started: {dep} is {dep_state or 'unknown'}")
                        return
                if not self._stop.is_set():
                    await self.start_program(name)
            finally:
                done[name].set()

        await asyncio.gather(*(one(n) for n in names))

    async def shutdown(self) -> None:
        self.shutting_down = True
        self._stop.set()
        self.publish()
        if self.chaos is not None:  # paused programs resume, cut links heal, before stopping
            await self.chaos.close()
        probes = sys.modules.get("msgctl.infra.probes")  # loaded where engines run
        if probes is not None:  # before the nodes stop: no reconnecting to them
            await asyncio.to_thread(probes.forget_sessions)
        for name in reversed(self.order):
            await self.stop_program(name)
        if self.chaos is not None:
            await asyncio.to_thread(self.chaos.teardown)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.home.socket_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.home.pid_file.unlink()
        self.shutting_down = False
        self.publish()

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                cmd = json.loads(line)
                op = cmd.get("op")
            except (ValueError, AttributeError):
                cmd, op = {}, None
            if op == "status":
                reply: dict[str, Any] = {"ok": True, **self.snapshot()}
            elif op == "restart":
                pattern = str(cmd.get("glob", "*"))
                names = self._names(cmd, pattern)
                if not names:
                    reply = {"ok": False, "error": f"no program or runtime matches '{pattern}'",
                             "code": 2}
                else:
                    # what depends on a restarted engine is named either way; it restarts
                    # too only when asked (a runtime rides out an engine restart itself)
                    programs = [self.managed[n].program for n in self.order]
                    dependents = engine_dependents(programs, names)
                    both = bool(cmd.get("dependents"))
                    await self.restart(names + dependents if both else names)
                    reply = {"ok": True, "restarted": [n for n in self.order if n in names
                                                       or (both and n in dependents)],
                             "dependents": dependents, **self.snapshot()}
            elif op == "kill":
                reply = self.kill(str(cmd.get("glob", "")), cmd.get("signal"),
                                  self._names(cmd, None) if "names" in cmd else None)
            elif op in ("stop", "start"):
                pattern = str(cmd.get("glob", ""))
                names = self._names(cmd, pattern) if pattern or "names" in cmd else []
                if not names:
                    reply = {"ok": False, "error": f"no program or runtime matches '{pattern}'",
                             "code": 2}
                else:
                    done = await (self.stop_some(names) if op == "stop"
                                  else self.start_some(names))
                    reply = {"ok": True, "changed": done, **self.snapshot()}
            elif op == "shutdown":
                self._stop.set()
                reply = {"ok": True}
            elif op in ("chaos_apply", "chaos_heal", "chaos_list"):
                reply = await self._chaos(op, cmd)
            else:
                reply = {"ok": False, "error": f"unknown command {op!r}"}
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _chaos(self, op: str, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.chaos is None:
            return {"ok": False, "error": "this deployment was started without chaos support; "
                    "run 'msgctl down' and 'msgctl up' again", "code": 1}
        try:
            if op == "chaos_apply":
                fault = cmd.get("fault")
                if not isinstance(fault, dict):
                    return {"ok": False, "error": "chaos_apply needs a fault", "code": 2}
                return {"ok": True, "fault": await self.chaos.apply(fault)}
            if op == "chaos_heal":
                fid = cmd.get("id")
                return {"ok": True, "healed": await self.chaos.heal(
                    str(fid) if fid else None), "faults": self.chaos.in_force()}
            return {"ok": True, "faults": self.chaos.in_force(), **self.chaos.view()}
        except FaultError as exc:
            return {"ok": False, "error": str(exc), "code": exc.code}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad fault: {exc}", "code": 2}

    def _names(self, cmd: dict[str, Any], pattern: str | None) -> list[str]:
        """The programs a command names: `names` (exact, as a region's agent sends them)
        when given, else those `pattern` matches."""
        names = cmd.get("names")
        if isinstance(names, list):
            return [n for n in self.order if n in {str(x) for x in names}]
        return self.match(pattern) if pattern is not None else []

    def match(self, pattern: str) -> list[str]:
        """Programs matching a glob on the program or on a runtime it hosts (gateway.local)."""
        return match_programs([self.managed[n].program for n in self.order], pattern)

    def kill(self, pattern: str, sig: Any, names: list[str] | None = None) -> dict[str, Any]:
        """Signal the process group of every matching program that runs (``msgctl kill``);
        unlike `stop_some` the program stays wanted, so its restart policy brings it back."""
        if names is None:
            names = self.match(pattern) if pattern else []
        if not names:
            return {"ok": False, "error": f"no program or runtime matches '{pattern}'",
                    "code": 2}
        try:
            num = signal_number(sig if isinstance(sig, str | int) else "KILL")
        except FaultError as exc:
            return {"ok": False, "error": str(exc), "code": 2}
        signalled = []
        for name in names:
            pid = self.live_pid(name)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, num)
                signalled.append({"name": name, "pid": pid})
        return {"ok": True, "signal": signal.Signals(num).name.removeprefix("SIG"),
                "matched": names, "signalled": signalled, **self.snapshot()}


def load_plan(home: Home) -> list[Program]:
    raw = json.loads(home.plan_file.read_text())
    return [Program.from_dict(p) for p in raw["programs"]]


def load_chaos_plan(home: Home) -> ChaosPlan | None:
    try:
        raw = json.loads(home.plan_file.read_text()).get("chaos")
    except (OSError, ValueError):
        return None
    return ChaosPlan.from_dict(raw) if isinstance(raw, dict) else None


async def serve(home: Home) -> int:
    return await Supervisor(home, load_plan(home), chaos=load_chaos_plan(home)).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msgctl.supervisor.daemon")
    parser.add_argument("--home", required=True, type=Path)
    args = parser.parse_args(argv)
    lean.skip_numpy()  # its probes and warm-ups load the Cassandra driver
    # the supervisor owns its process: whatever it (and the chaos host) writes into the
    # home, state, ledger and all, is the user's alone
    os.umask(PRIVATE_UMASK)
    return asyncio.run(serve(Home(args.home)))


if __name__ == "__main__":
    sys.exit(main())
