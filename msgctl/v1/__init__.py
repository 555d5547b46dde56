"""Generated gRPC code of the agent API (proto/msgctl/v1): made by scripts/gen-proto."""
