"""The control plane: one gRPC agent per region host (server) and the operator's side of it
(transport), under mutual TLS with the deployment's CA."""
