"""Error codes of protocol v1 and the WebSocket close codes the gateway uses."""

BAD_FRAME = "bad_frame"
TOO_LARGE = "too_large"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
LIMIT_EXCEEDED = "limit_exceeded"  # a cap on what one user or connection may hold
UNAVAILABLE = "unavailable"
INTERNAL = "internal"

# Close codes (RFC 6455 section 7.4) for the abuse cases that end a connection.
CLOSE_POLICY = 1008  # rate-limit flood
CLOSE_TRY_AGAIN = 1013  # slow consumer: its queue is full, reconnect and resume
CLOSE_GOING_AWAY = 1001  # server shutting down
CLOSE_INTERNAL = 1011  # keepalive ping timeout
