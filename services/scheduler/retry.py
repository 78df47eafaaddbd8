"""Retry decisions by failure class: whether to try again, after how long, and why (pure)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from keel.vocab import AUTH, BUDGET, RATE_LIMITED, SAFE_TO_REPEAT_MODES, UNKNOWN_OUTCOME, VALIDATION
from keel.workflows import RetryPolicy

# The longest a provider's Retry-After can hold a step (unless the step's own max backoff is longer): a
# provider's header must not park a run for days, nor push a timer past what a datetime can hold.
MAX_RETRY_AFTER_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class RetryDecision:
    action: str  # "retry" | "fail" | "quarantine"
    reason: str
    delay_ms: int = 0


def backoff_ms(policy: RetryPolicy, attempt: int, seed: str) -> int:
    """Exponential backoff with full jitter, capped. Deterministic for a seed, so a replay decides alike."""
    ceiling = min(policy.max_backoff_ms, policy.initial_backoff_ms * policy.multiplier ** (attempt - 1))
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    return int(rng.uniform(0, ceiling))


def decide_retry(
    policy: RetryPolicy,
    failure_class: str,
    attempt: int,
    *,
    idempotency_mode: str | None,
    retry_after_ms: int | None,
    seed: str,
) -> RetryDecision:
    if failure_class == AUTH:
        return RetryDecision("fail", "auth/permission failures are never retried")
    if failure_class == VALIDATION:
        return RetryDecision("fail", "validation failures are never retried blindly")
    if failure_class == BUDGET:
        return RetryDecision("fail", "budget exceeded: hard stop")
    if failure_class == UNKNOWN_OUTCOME and idempotency_mode not in SAFE_TO_REPEAT_MODES:
        return RetryDecision(
            "quarantine",
            f"outcome unknown and the adapter's idempotency mode is "
            f"{idempotency_mode or 'none'}: repeating could duplicate the effect",
        )
    if attempt >= policy.max_attempts:
        return RetryDecision("fail", f"{failure_class}: gave up after {attempt} attempts")
    delay = backoff_ms(policy, attempt, seed)
    if failure_class == UNKNOWN_OUTCOME:
        reason = f"outcome unknown; the {idempotency_mode} adapter makes repeating with the same key safe"
    elif failure_class == RATE_LIMITED and retry_after_ms is not None:
        ceiling = max(policy.max_backoff_ms, MAX_RETRY_AFTER_MS)
        wait = min(max(retry_after_ms, 0), ceiling)
        delay = max(delay, wait)
        reason = f"rate limited: retry after the provider's Retry-After ({retry_after_ms} ms)"
        if wait < retry_after_ms:
            reason += f", capped at {ceiling} ms"
    else:
        reason = f"{failure_class} failure: retry with backoff"
    return RetryDecision("retry", reason, delay)
