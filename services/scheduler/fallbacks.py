"""Safe fallbacks (docs/quarantine.md): a step that would be quarantined, or would fail its run, degrades
to the step it declares (`on_quarantine` / `on_failure` / an approval's `on_timeout: {fallback: STEP}`)
and the run goes on.

The step that degrades becomes FELL_BACK and names its fallback in `fallback_for`; the fallback step
(declared `fallback_only`, so it never runs unless chosen) becomes ready, and once it commits, its output
stands in for the degraded step's (`RunState.outputs()`): the steps after it run as if it had committed.
The choice is a fact, `fallback_chosen`, carrying the evidence a quarantine would have kept: a fallback
opens no case, so an effect that may exist (an unknown outcome, an accepted call) stays visible on it.
"""

from __future__ import annotations

from typing import Any

from keel import events as ev
from keel.contracts import RunEvent
from keel.vocab import UNKNOWN_OUTCOME
from keel.workflows import WorkflowSpec
from services.scheduler.state import (
    COMMITTED,
    FELL_BACK,
    PAUSED,
    PENDING,
    QUARANTINED,
    RUNNING,
    SKIPPED,
    RunState,
)
from services.scheduler.verdicts import Decision, event


def chosen(state: RunState) -> set[str]:
    """The fallback steps chosen so far (ready_steps may start these fallback-only steps)."""
    return {s.fallback_for for s in state.steps.values() if s.status == FELL_BACK and s.fallback_for}


def degrade(
    state: RunState,
    step: str,
    to: str | None,
    now_ms: int,
    *,
    because: str,
    failure_class: str | None,
    error: str | None = None,
    key: str | None = None,
    evidence: RunEvent | None = None,
    effect_may_exist: bool = False,
) -> Decision | None:
    """Fall back from `step` to `to` instead of quarantining it or failing the run. None when the step
    declares no such fallback (`to` is None), the fallback has started already (it runs at most once),
    or the run is ending (canceling: no new step starts). While the run is paused or holds another step,
    the fallback is chosen now and starts when the run runs again. It is issued by whoever holds the
    workflow (`dispatch.dispatch_ready`; `dispatch.after_fallback` after outcomes, which do not)."""
    if to is None or state.status not in (RUNNING, PAUSED, QUARANTINED):
        return None
    if to not in state.steps or state.steps[to].status != PENDING:  # a fallback runs at most once
        return None
    held = state.steps[step]
    held.status, held.fallback_for = FELL_BACK, to
    held.fire_at = held.deadline = None
    record: dict[str, Any] = {
        "from": step,
        "to": to,
        "because": because,
        "failure_class": failure_class,
        "error": error,
        "key": key or held.idempotency_key,
        "effect_may_exist": effect_may_exist or failure_class == UNKNOWN_OUTCOME,
    }
    proof: dict[str, Any] = {}
    if evidence is not None:  # what a quarantined event would have carried: the case it does not open
        proof = {"input_ref": evidence.input_ref, "output_ref": evidence.output_ref}
        record["evidence"] = {
            "event_id": evidence.event_id,
            "input_ref": evidence.input_ref,
            "output_ref": evidence.output_ref,
            "output_json": evidence.output_json,
        }
    out_json, _ = ev.inline(record)
    fact = event(
        state,
        ev.FALLBACK_CHOSEN,
        now_ms,
        step,
        held.attempt,
        idempotency_key=key or held.idempotency_key,
        error=error,
        output_json=out_json,
        **proof,
    )
    return Decision(state, [fact])


def settled(state: RunState, spec: WorkflowSpec) -> bool:
    """Whether the run has nothing left to do: every step committed, fell back to a committed fallback,
    or is a fallback-only step nobody chose (it will be skipped)."""
    picked = chosen(state)
    for s in spec.steps:
        step = state.steps[s.name]
        if step.status == COMMITTED:
            continue
        stand_in = state.steps.get(step.fallback_for or "")
        if step.status == FELL_BACK and stand_in is not None and stand_in.status == COMMITTED:
            continue
        if step.status in (PENDING, SKIPPED) and s.fallback_only and s.name not in picked:
            continue
        return False
    return True


def skip_unchosen(state: RunState, spec: WorkflowSpec) -> None:
    """At completion: the fallback-only steps the run never needed are SKIPPED."""
    picked = chosen(state)
    for s in spec.steps:
        if s.fallback_only and s.name not in picked and state.steps[s.name].status == PENDING:
            state.steps[s.name].status = SKIPPED
