"""Errors the CLI reports as one readable line, and the exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the deployment did not come up, or an operation failed
EXIT_USAGE = 2  # bad arguments, a missing or invalid topology, a port in use
EXIT_NOT_RUNNING = 3  # nothing runs under this home (status, restart, logs -f)


class MsgctlError(Exception):
    """An error with a message fit for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(MsgctlError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
