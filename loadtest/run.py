"""Run Locust headless as subprocesses: one process, or a master and N workers.

Every process gets `MSGCTL_LOAD_CONFIG` (see loadtest.config), runs in its own process
group with its output in `<out>/locust-*.log`, and binds nothing but 127.0.0.1 (the
master's port for its workers). The caller polls `done()` and `progress()`, and calls
`stop()` on a deadline or Ctrl-C; every process is ended by its own pid.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from loadtest import LOCUSTFILE
from loadtest.config import CONFIG_ENV

STOP_TIMEOUT_S = 3  # Locust's --stop-timeout: users finish their current step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocustRun:
    def __init__(self, out: Path, config_path: Path, workers: int) -> None:
        self.out = out
        self.config_path = config_path
        self.workers = workers
        self.prefix = out / "locust"
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    @property
    def master(self) -> subprocess.Popen[bytes]:
        return self.procs[0][1]

    @property
    def master_log(self) -> Path:
        return self.out / f"{self.procs[0][0]}.log"

    def _spawn(self, name: str, args: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        env.update({CONFIG_ENV: str(self.config_path), "PYTHONUNBUFFERED": "1"})
        log = (self.out / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=str(self.out), start_new_session=True)
        self.procs.append((name, proc, log))

    def start(self) -> None:
        common = ["--headless", "--only-summary", "--csv", str(self.prefix), "--json-file",
                  str(self.prefix), "--stop-timeout", str(STOP_TIMEOUT_S)]
        if self.workers <= 1:
            self._spawn("locust", common)
            return
        port = _free_port()
        self._spawn("locust-master", [
            *common, "--master", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(port), "--expect-workers", str(self.workers),
            "--expect-workers-max-wait", "60"])
        for i in range(self.workers):
            self._spawn(f"locust-worker-{i}", [
                "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)])

    def done(self) -> bool:
        return self.master.poll() is not None

    def wait_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _, proc, _ in self.procs[1:]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))

    def stop(self, grace: float = 15.0) -> None:
        """Stop early: SIGINT to the master (a headless shape run handles it like Ctrl-C:
        it stops the users, tells the workers to quit and writes its stats; SIGTERM would
        kill it before it installs its handler), then SIGTERM and SIGKILL what is left."""
        if not self.procs:
            return
        if self.master.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master.pid, signal.SIGINT)
        self._wait_or_kill(self.procs[:1], grace)
        self.wait_workers(timeout=5)
        for _, proc, _ in self.procs[1:]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        self._wait_or_kill(self.procs[1:], 5)

    @staticmethod
    def _wait_or_kill(procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]],
                      grace: float) -> None:
        deadline = time.monotonic() + grace
        for _, proc, _ in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def close(self) -> None:
        self.stop(grace=5.0)
        for _, _, log in self.procs:
            log.close()

    def progress(self) -> dict[str, Any] | None:
        """The latest aggregated row of the stats history: users, req/s, totals."""
        path = Path(f"{self.prefix}_stats_history.csv")
        try:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            return None
        for row in reversed(rows):
            if row.get("Name") == "Aggregated":
                try:
                    return {"users": int(row["User Count"]),
                            "rps": float(row["Requests/s"]),
                            "requests": int(row["Total Request Count"]),
                            "failures": int(row["Total Failure Count"])}
                except (KeyError, ValueError):
                    return None
        return None

    def last_error(self) -> str:
        """The last line of the master's log that looks like an error, for a one-line report."""
        try:
            lines = self.master_log.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        for line in reversed(lines):
            if any(w in line for w in ("Error", "error", "Exception", "Traceback")):
                return line.strip()[:300]
        return lines[-1].strip()[:300] if lines else "no output"
