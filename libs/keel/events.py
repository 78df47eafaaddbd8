"""The vocabulary of keel.run-events: event kinds, run and step statuses, and one way to build an event."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from keel.contracts import RunEvent
from keel.idempotency import canonical_json, content_ref

# Run level (scheduler)
CREATED, SCHEDULED, STARTED = "created", "scheduled", "started"
COMPLETED, FAILED, CANCELED = "completed", "failed", "canceled"
RETRY_SCHEDULED = "retry_scheduled"
# Step level
STEP_STARTED = "step_started"  # executor took an attempt
MODEL_CALLED = "model_called"  # executor: one model call, with tokens and cost
STEP_FAILED = "step_failed"  # executor: an llm attempt failed (failure class in step_detail)
TOOL_CALLED, TOOL_SUCCEEDED, TOOL_FAILED = "tool_called", "tool_succeeded", "tool_failed"  # adapters
STEP_COMMITTED = "step_committed"  # ledger (tools), executor (llm steps), scheduler (agent answers): done
# Agent steps (scheduler): a call the model asked for and that was not made, an answer refused (why: error)
TOOL_CALL_REFUSED, ANSWER_REFUSED = "tool_call_refused", "answer_refused"
ROUTE_CHANGED = "route_changed"  # a model call takes its step's cheaper route: its budget would be crossed
LOOP_DETECTED = "loop_detected"  # the same call repeated past the step's max_repeats: the run is hard-stopped
# Later families
BUDGET_WARNING, BUDGET_EXCEEDED = "budget_warning", "budget_exceeded"
QUARANTINED, QUARANTINE_RESOLVED, DEAD_LETTERED = "quarantined", "quarantine_resolved", "dead_lettered"
# Cases, decisions and control (docs/quarantine.md). A case opens with `quarantined` (a held step) or
# `approval_requested` (a step waiting for a human's yes); `quarantine_resolved` closes either, with the
# decision in quarantine.decision; a decision that cannot apply is `decision_refused` (why: error).
APPROVAL_REQUESTED, DECISION_REFUSED = "approval_requested", "decision_refused"
PAUSED, RESUMED = "paused", "resumed"  # run level: no new attempt starts while paused
FALLBACK_CHOSEN = "fallback_chosen"  # a quarantined or failed step degrades to its declared fallback step
# Fair dispatch (docs/tenancy.md section 6): an attempt ready to go waits for a slot of its tenant, and
# leaves the tenant's queue (its command goes out with this fact).
STEP_QUEUED, STEP_RELEASED = "step_queued", "step_released"

TERMINAL = frozenset({COMPLETED, FAILED, CANCELED})


def inline(value: Any) -> tuple[str, str]:
    """(canonical JSON, content ref) of a JSON value, for the *_json / *_ref field pairs."""
    return canonical_json(value), content_ref(value)


def content_ref_of_json(text: str) -> str:
    """Content ref of a JSON text (parsed first, so formatting does not change the address)."""
    return content_ref(json.loads(text))


def event_id(
    run_id: str,
    kind: str,
    step: str | None = None,
    attempt: int = 0,
    extra: str = "",
    call: str | None = None,
) -> str:
    # Deterministic: re-processing the same input after a crash yields the same event ids, so readers
    # can de-duplicate at-least-once copies (only aborted copies exist for transactional producers).
    # `call` (an agent step's turn or tool call) sits after the step, so each sub-step has its own ids;
    # a plain step's ids are what they always were.
    return ":".join(p for p in (run_id, step or "", call or "", str(attempt), kind, extra) if p != "")


class StepCoordinates(Protocol):
    """Where a step-level fact belongs: step and tool commands and run events all carry these."""

    @property
    def run_id(self) -> str: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def workflow_version(self) -> int | None: ...
    @property
    def step(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def trace_id(self) -> str | None: ...
    @property
    def call(self) -> str | None: ...  # the agent step's turn or tool call, if any
    @property
    def agent_id(self) -> str | None: ...


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds: the services' notion of now (timers, deadlines, ts)."""
    return int(time.time() * 1000)


def at_ms(ms: int) -> datetime:
    """An epoch-milliseconds time as the aware datetime the contracts carry."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def step_fact(
    at: StepCoordinates, kind: str, now_ms: int, source: str, extra: str = "", **fields: Any
) -> RunEvent:
    """A fact about the step attempt `at` points to, as the service `source` saw it at `now_ms`. The
    agent step's sub-step (`call`) and its agent are copied too, unless `fields` names them."""
    fields.setdefault("agent_id", at.agent_id)
    return RunEvent(
        event_id=event_id(at.run_id, kind, at.step, at.attempt, extra, at.call),
        run_id=at.run_id,
        task_id=at.task_id,
        tenant_id=at.tenant_id,
        workflow=at.workflow,
        workflow_version=at.workflow_version,
        step=at.step,
        event=kind,
        ts=at_ms(now_ms),
        attempt=at.attempt,
        idempotency_key=at.idempotency_key,
        source=source,
        trace_id=at.trace_id,
        call=at.call,
        **fields,
    )
