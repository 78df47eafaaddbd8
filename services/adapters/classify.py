"""Failure classes for tool calls: what an HTTP status, an exception or a Retry-After header means."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from keel.vocab import AUTH, RATE_LIMITED, TRANSIENT, UNKNOWN_OUTCOME, VALIDATION, FailureClass

# Failures that prove nothing reached the provider: no connection, or no free connection to use.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


# Stripe's answer while another request with the same Idempotency-Key is still being processed.
KEY_IN_USE = "idempotency_key_in_use"


def classify_http(status: int, error_type: str | None = None) -> FailureClass:
    """The failure class of a non-2xx response; `error_type` is the provider's own error code, if any."""
    if 200 <= status < 300:
        raise ValueError(f"HTTP {status} is a success, not a failure")
    if status == 409 and error_type == KEY_IN_USE:
        # Another request under this key is in flight and may well deliver: the outcome is unknown, and
        # only a retry under the same key (after it settled) can tell. Never a validation failure.
        return UNKNOWN_OUTCOME
    if status == 429:
        return RATE_LIMITED
    if status in (401, 403):
        return AUTH
    if status == 408 or status >= 500:
        return TRANSIENT
    # 400/404/409/422 and any other refusal: the same request would be refused again, so no blind retry.
    return VALIDATION


def request_was_sent(exc: BaseException) -> bool:
    """Whether the request may have reached the provider before `exc`. Only a failure to connect proves
    it did not; anything later (a write or read error, a timeout) may come after the provider acted."""
    return not isinstance(exc, _NOTHING_SENT)


def classify_exception(exc: BaseException, request_sent: bool) -> FailureClass:
    """The failure class of a call that got no response."""
    if isinstance(exc, _NOTHING_SENT) or not request_sent:
        return TRANSIENT
    # The provider may have acted and we cannot see the answer: only an idempotent retry is safe.
    return UNKNOWN_OUTCOME


def parse_retry_after(value: str | None, now: datetime | None = None) -> int | None:
    """Retry-After (delta seconds or an HTTP date) in milliseconds; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0, math.ceil(seconds * 1000))
