"""The deployment library: what `msgctl` commands do, with no terminal in it.

The CLI modules (msgctl/cli/) parse arguments, render with Rich and pick exit
codes; the work is here, callable from tests, drills and scripts alike:

- `msgctl.deploy.lifecycle`: prepare a home from a topology (ports, storage, the
  plan), start, wait for and stop its supervisor;
- `msgctl.deploy.status`: the runtimes' rows, replication lag, push queue depths,
  faults in force, and the whole status report;
- `msgctl.deploy.metrics`: scraping a runtime's Prometheus ``/metrics``;
- `msgctl.deploy.push`: push tokens from the deployment's store and a test
  notification through the configured providers;
- `msgctl.deploy.logs`: the log files' lines of every format, with their times and
  levels, merged and filtered (``msgctl logs``).

Errors are `msgctl.errors.MsgctlError` (and `UsageError`), with the exit code the
CLI uses.
"""

from msgctl.deploy.lifecycle import (
    Hooks,
    check_port_free,
    default_timeout,
    prepare,
    start_supervisor,
    stop_supervisor,
)
from msgctl.deploy.status import push_queue_depths, replication_links, report, runtime_rows

__all__ = ["Hooks", "check_port_free", "default_timeout", "prepare", "push_queue_depths",
           "replication_links", "report", "runtime_rows", "start_supervisor",
           "stop_supervisor"]
