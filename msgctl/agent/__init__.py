"""The control plane: one gRPC agent per region host (server) and the operator's side of it
(transport), under mutual TLS with the deployment's CA."""

import os

# gRPC's C core would print its own log lines (a failed bind, a refused handshake) on the
# operator's terminal next to msgctl's one-line errors; the agents say what went wrong
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
