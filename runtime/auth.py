"""Dev JWTs (HS256): issued by `msgctl token`, checked by the gateway on the handshake."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class AuthError(Exception):
    pass


@dataclass(frozen=True)
class Identity:
    user: str
    device: str
    exp: float = 0.0  # seconds since the epoch


def issue(secret: str, user: str, device: str, ttl_seconds: int = 86400,
          now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims = {"sub": user, "did": device, "iat": int(now), "exp": int(now + ttl_seconds)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Identity:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["sub", "did", "exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    user, device = claims.get("sub"), claims.get("did")
    if not isinstance(user, str) or not isinstance(device, str) or not user or not device:
        raise AuthError("token claims 'sub' and 'did' must be non-empty strings")
    if len(user) > 128 or len(device) > 128:
        raise AuthError("token claims 'sub' and 'did' must be at most 128 characters")
    exp = claims["exp"]
    return Identity(user, device, float(exp) if isinstance(exp, int | float) else 0.0)
