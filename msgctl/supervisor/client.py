"""Talking to a running supervisor: its control socket and its state file."""

from __future__ import annotations

import json
import socket
from typing import Any

from msgctl.errors import EXIT_NOT_RUNNING, MsgctlError
from msgctl.home import Home


def command(home: Home, op: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
    """`op` on the deployment under `home`, and its reply: through its regions' agents when
    its topology names them (the agents' gRPC API, mutual TLS), else to the supervisor's
    control socket. `shutdown` is always the local supervisor's (`msgctl down`)."""
    if op != "shutdown" and has_agents(home.deployment()):
        from msgctl.agent import transport  # grpc loads only where there are agents

        return transport.command(home, op, timeout, **args)
    return socket_command(home, op, timeout, **args)


def has_agents(deployment: dict[str, Any] | None) -> bool:
    """The deployment's regions name gRPC agents (then every verb goes through them);
    answered without loading grpc."""
    return any(isinstance(r, dict) and r.get("agent")
               for r in (deployment or {}).get("regions", []))


def socket_command(home: Home, op: str, timeout: float = 120.0,
                   **args: Any) -> dict[str, Any]:
    """Send `op` to the supervisor of `home` and return its reply; `timeout` bounds the
    whole exchange, so a command that restarts engines passes their own deadlines."""
    if home.supervisor_pid() is None:
        raise MsgctlError(f"nothing is running under {home.root} (run 'msgctl up')",
                          EXIT_NOT_RUNNING)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(home.socket_file))
            sock.sendall((json.dumps({"op": op, **args}) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except TimeoutError:
        # the supervisor took the command and is still at it (an engine can take minutes)
        raise MsgctlError(f"the supervisor did not answer '{op}' within {timeout:.0f}s; it "
                          "may still be working on it: see 'msgctl status'") from None
    except OSError as exc:
        raise MsgctlError(f"cannot reach the supervisor at {home.socket_file}: {exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise MsgctlError("the supervisor gave no answer") from None
    if not reply.get("ok"):
        code = reply.get("code")
        raise MsgctlError(str(reply.get("error", "the supervisor refused the command")),
                          code if isinstance(code, int) and code in (1, 2) else 1)
    return reply


def read_state(home: Home) -> dict[str, Any] | None:
    try:
        return json.loads(home.state_file.read_text())
    except (OSError, ValueError):
        return None
