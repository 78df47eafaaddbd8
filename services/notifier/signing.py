"""Webhook signatures, Stripe-style: `Keel-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The signed text is f"{t}.{raw body}": the timestamp is signed with the body, so a captured delivery
cannot be replayed later with a fresh timestamp. Receivers verify with the same secret (see `verify`).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Keel-Signature"
EVENT_ID_HEADER = "Keel-Event-Id"
DEFAULT_TOLERANCE_S = 300


def _digest(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, t: int) -> str:
    """The Keel-Signature header value for `body` sent at unix time `t`."""
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(secret: str, body: bytes, header: str, now: int, tolerance_s: int = DEFAULT_TOLERANCE_S) -> bool:
    """Whether `header` signs `body` with `secret`, at a time no further than `tolerance_s` from `now`.
    Any v1 entry may match (several appear while a secret is being rotated)."""
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                t = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if t is None or not candidates or abs(now - t) > tolerance_s:
        return False
    expected = _digest(secret, t, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
