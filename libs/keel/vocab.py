"""Keel's words, defined once: failure classes, idempotency modes, and run, step and attempt statuses.

Every value here is a wire value (Avro string fields, Postgres columns, the scheduler's changelog, the
HTTP API): never change one, only add new words. Event kinds are the vocabulary of `keel.events`.
"""

from __future__ import annotations

from typing import Final, Literal

# --- Failure classes: what went wrong with an attempt, and so what the scheduler may do about it.
FailureClass = Literal["transient", "rate_limited", "unknown_outcome", "validation", "auth", "budget"]
TRANSIENT: Final = "transient"  # connection reset, 5xx, timeout before sending: retry with backoff
RATE_LIMITED: Final = "rate_limited"  # 429, quota: retry after the provider's Retry-After
UNKNOWN_OUTCOME: Final = "unknown_outcome"  # sent, no answer: retry only under a safe idempotency mode
VALIDATION: Final = "validation"  # the request or the answer breaks its contract: no blind retry
AUTH: Final = "auth"  # 401/403, wrong tenant: never retried
BUDGET: Final = "budget"  # a budget would be crossed: hard stop
FAILURE_CLASSES: Final = frozenset({TRANSIENT, RATE_LIMITED, UNKNOWN_OUTCOME, VALIDATION, AUTH, BUDGET})

# --- Idempotency modes: how a tool guarantees that repeating a call never makes a second effect.
IdempotencyMode = Literal["provider_key", "lookup", "none"]
PROVIDER_KEY: Final = "provider_key"  # the provider deduplicates on an Idempotency-Key header
LOOKUP: Final = "lookup"  # the adapter asks the provider whether the effect already happened
NONE: Final = "none"  # neither: an unknown outcome goes to quarantine, never retried
IDEMPOTENCY_MODES: Final = frozenset({PROVIDER_KEY, LOOKUP, NONE})
# The modes under which an attempt whose outcome is unknown may be repeated with the same key.
SAFE_TO_REPEAT_MODES: Final = frozenset({PROVIDER_KEY, LOOKUP})

# --- Run statuses: the scheduler's state of a run, and the `status` of the runs projection.
UNKNOWN: Final = "unknown"  # projection only: a row no run-level event has reached yet (the table default)
CREATED: Final = "created"
SCHEDULED: Final = "scheduled"
RUNNING: Final = "running"
CANCELING: Final = "canceling"  # scheduler only: a cancel waits for the attempts in flight to settle
QUARANTINED: Final = "quarantined"  # held for a human
PAUSED: Final = "paused"  # an operator paused it: no new attempt starts until it is resumed
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELED: Final = "canceled"
# A run in one of these has ended; nothing more happens to it.
TERMINAL_RUN_STATUSES: Final = frozenset({COMPLETED, FAILED, CANCELED})
# A caller waiting for a run stops at these: the run has ended or waits for a human.
SETTLED_RUN_STATUSES: Final = TERMINAL_RUN_STATUSES | {QUARANTINED}

# --- Step statuses. The scheduler's state: PENDING, DISPATCHED, WAITING_RETRY, COMMITTED, FAILED, and
# CANCELED (the run was canceled before the step's next attempt; no effect is pending). The steps
# projection: RUNNING, FAILED, RETRYING, COMMITTED.
PENDING: Final = "pending"
DISPATCHED: Final = "dispatched"
WAITING_RETRY: Final = "waiting_retry"
RESERVING: Final = "reserving"  # scheduler only: the attempt waits for its budget reservation
AWAITING_APPROVAL: Final = "awaiting_approval"  # scheduler only: the step waits for a human's approval
SKIPPED: Final = "skipped"  # scheduler only: a fallback step its run never needed
FELL_BACK: Final = "fell_back"  # scheduler only: the step's fallback step stands in for it
RETRYING: Final = "retrying"
COMMITTED: Final = "committed"  # the step's effect is recorded by the ledger (or its llm answer committed)

# --- Attempt statuses (the attempts projection): RUNNING, then SUCCEEDED or FAILED, then COMMITTED.
SUCCEEDED: Final = "succeeded"

# --- Cases and decisions (docs/quarantine.md). A case is a quarantined step or a waiting approval.
CASE_QUARANTINE: Final = "quarantine"
CASE_APPROVAL: Final = "approval"
RETRY: Final = "retry"  # quarantine: the same input under the same key
EDIT: Final = "edit"  # quarantine: a new input (checked against the tool's schema) under a new key
SKIP: Final = "skip"  # quarantine: the step commits with a supplied output (checked against its schema)
FAIL: Final = "fail"  # quarantine or approval: the run ends failed
APPROVE: Final = "approve"  # approval: the exact payload and key shown may be sent
DENY: Final = "deny"  # approval: it may not (the step's on_timeout/denial rule applies)
CANCEL: Final = "cancel"  # any open case: its run was canceled (the decision names who canceled it)
EXPIRE: Final = "expire"  # approval: its deadline passed with no decision (the scheduler decides)
QUARANTINE_DECISIONS: Final = frozenset({RETRY, EDIT, SKIP, FAIL})
APPROVAL_DECISIONS: Final = frozenset({APPROVE, DENY, FAIL})
# Control commands (keel.control, ControlCommand.action).
CONTROL_ACTIONS: Final = frozenset({"cancel", "pause", "resume", "decide"})
