"""The notifier's pure core: which run events notify, the body they send, and the retry policy.

No I/O here: the shell (service.py, delivery.py) reads the events, posts the bodies and keeps time.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import keel.events as ev
from keel.contracts import RunEvent

CASE_OPENED, APPROVAL_WAITING, RUN_ENDED = "case.opened", "approval.waiting", "run.ended"
# Event kinds that notify, and the notification type each becomes.
TYPES = {
    ev.QUARANTINED: CASE_OPENED,
    ev.APPROVAL_REQUESTED: APPROVAL_WAITING,
    ev.COMPLETED: RUN_ENDED,
    ev.FAILED: RUN_ENDED,
    ev.CANCELED: RUN_ENDED,
}


@dataclass(frozen=True)
class Notification:
    """One webhook to send: `body` is exactly the bytes that are signed and posted."""

    event_id: str
    tenant_id: str
    type: str
    run_id: str
    case_id: str | None
    body: bytes


def notification_for(event: RunEvent, public_url: str) -> Notification | None:
    """The notification a run event gives, or None when its kind notifies nobody."""
    kind = TYPES.get(event.event)
    if kind is None:
        return None
    case = event.quarantine.case_id if event.quarantine is not None and kind != RUN_ENDED else None
    if kind == RUN_ENDED:
        status = event.event
        reason = (event.run.reason if event.run is not None else None) or event.error
    else:
        status = "quarantined" if kind == CASE_OPENED else "awaiting_approval"
        reason = event.quarantine.reason if event.quarantine is not None else event.error
    base = public_url.rstrip("/")
    body: dict[str, Any] = {
        "id": event.event_id,
        "type": kind,
        "tenant_id": event.tenant_id,
        "run_id": event.run_id,
        "step": event.step,
        "case_id": case,
        "status": status,
        "reason": reason,
        "ts": event.ts.isoformat(),
        "links": {
            "run": f"{base}/v1/runs/{quote(event.run_id, safe='')}",
            "case": f"{base}/v1/quarantine/{quote(case, safe=':')}" if case else None,
            # The operator console's page of the case, or of the run (docs/console.md): what a person
            # paged by this notification opens.
            "console": f"{base}/console/cases/{quote(case, safe=':')}"
            if case
            else f"{base}/console/runs/{quote(event.run_id, safe='')}",
        },
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return Notification(event.event_id, event.tenant_id, kind, event.run_id, case, raw)


# -- the retry policy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """How deliveries are retried (see `next_delay`) and when they are given up."""

    max_attempts: int = 8
    max_age_s: float = 3600.0
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 5.0


@dataclass(frozen=True)
class Answer:
    """What one POST got: an HTTP status, or no answer at all (`status` None: connection error, timeout)."""

    status: int | None
    error: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Verdict:
    action: Literal["delivered", "retry", "give_up"]
    delay_s: float = 0.0
    reason: str = ""


def next_delay(attempts_made: int, policy: Policy, rng: random.Random) -> float:
    """Wait before attempt `attempts_made + 1`: exponential with "equal jitter" (half fixed, half random).
    Full jitter may retry a dead endpoint at once; half fixed guarantees the spacing grows."""
    ceiling = min(policy.backoff_max_s, policy.backoff_s * 2.0 ** (attempts_made - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retryable(answer: Answer) -> bool:
    """No answer, a 5xx or a 429 may go better later; any other 4xx will not (the receiver refuses it)."""
    return answer.status is None or answer.status >= 500 or answer.status == 429


def _said(answer: Answer) -> str:
    return f"HTTP {answer.status}" if answer.status is not None else (answer.error or "no answer")


def judge(answer: Answer, attempts_made: int, age_s: float, policy: Policy, rng: random.Random) -> Verdict:
    """After attempt number `attempts_made` (its notification first tried `age_s` ago): done, retry
    after a delay (at least the receiver's Retry-After), or give up with the reason."""
    if answer.status is not None and 200 <= answer.status < 300:
        return Verdict("delivered")
    if not retryable(answer):
        return Verdict("give_up", reason=f"{_said(answer)}: the receiver refused it (not retried)")
    if attempts_made >= policy.max_attempts:
        return Verdict("give_up", reason=f"{_said(answer)} after {attempts_made} attempts")
    delay = next_delay(attempts_made, policy, rng)
    if answer.retry_after_s is not None:
        delay = max(delay, answer.retry_after_s)
    if age_s + delay > policy.max_age_s:
        return Verdict(
            "give_up", reason=f"{_said(answer)}; a next attempt would pass {policy.max_age_s:g} s of age"
        )
    return Verdict("retry", delay_s=delay, reason=_said(answer))


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds; an HTTP date is not honoured: backoff applies)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
