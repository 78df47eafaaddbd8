"""Cancel in the scheduler's pure core: no new attempt starts; each call in flight settles first (its
commit kept, an unknown outcome quarantined); then the run ends canceled with who and why."""

from __future__ import annotations

from keel import events as ev
from keel.contracts import ControlCommand, QuarantineDetail, RunEvent, StepCommand
from keel.vocab import CANCEL, SAFE_TO_REPEAT_MODES, UNKNOWN_OUTCOME
from keel.workflows import WorkflowSpec
from services.scheduler.outcomes import KeyRetention, no_retention, on_failure
from services.scheduler.state import (
    AWAITING_APPROVAL,
    CANCELING,
    COMMITTED,
    DISPATCHED,
    PAUSED,
    QUARANTINED,
    RESERVING,
    STEP_CANCELED,
    WAITING_RETRY,
    RunState,
    StepState,
)
from services.scheduler.units import Unit, command, unit_state, units_of
from services.scheduler.verdicts import Decision, Emitted, end, event, quarantine


def on_cancel(state: RunState, cmd: ControlCommand, spec: WorkflowSpec, now_ms: int) -> Decision:
    """No new attempt starts. With nothing in flight the run ends canceled at once; otherwise each call
    in flight settles first (its commit kept; an unknown outcome repeated under the same key where that is
    safe, else quarantined), then the run ends."""
    if state.status == CANCELING:
        return Decision(state, [])
    state.canceled_by, state.cancel_reason = cmd.issued_by, cmd.reason
    closed = _close_cases(state, cmd, now_ms)
    decision = _cancel(state, spec, now_ms)
    return Decision(decision.state, closed + decision.outputs)


def _cancel(state: RunState, spec: WorkflowSpec, now_ms: int) -> Decision:
    if state.status == PAUSED:  # the pause ends with the run; an answer held for the resume is recorded
        state.paused_by = state.pause_reason = None
        _record_held_turns(state)
    if state.status == QUARANTINED:  # a human's decision on a held run: it ends here
        return _end_canceled(state, now_ms)
    unknown: tuple[Unit, StepState] | None = None
    for name in state.steps:
        for unit, sub in units_of(state, spec.step(name)):
            if _settling(sub):
                continue  # its repeat under the same key (a safe mode) settles the unknown outcome
            if sub.status in (WAITING_RETRY, RESERVING):
                sub.fire_at = None
                if sub.last_failure == UNKNOWN_OUTCOME:
                    # its last attempt may have had its effect: never retried now
                    unknown = unknown or (unit, sub)
                else:
                    sub.status = STEP_CANCELED
    state.status = CANCELING
    if unknown is not None:
        unit, sub = unknown
        why = f"canceled by {_who(state)} while attempt {sub.attempt}'s outcome was unknown"
        return quarantine(state, unit.step, now_ms, why, UNKNOWN_OUTCOME, call=unit.call)
    return settle_cancel(state, now_ms)


def failed_while_canceling(
    state: RunState, unit: Unit, fact: RunEvent, now_ms: int, key_retention: KeyRetention = no_retention
) -> Decision:
    tool = fact.tool
    failure_class = (tool.failure_class if tool else None) or (
        fact.step_detail.failure_class if fact.step_detail else None
    )
    accepted = bool(tool and tool.effect_accepted)
    called = not (tool and tool.blocked_reason)
    safe = tool is not None and tool.idempotency_mode in SAFE_TO_REPEAT_MODES
    if unit.effects and called and failure_class == UNKNOWN_OUTCOME and not accepted and safe:
        # The call in flight settles: repeating it under the same key is safe (the provider answers a
        # repeat with the first call's result, or the adapter looks the effect up), so the effect that
        # happened is committed, not left unknown. The usual rules bound it (attempts, key retention):
        # past them the step is held, as an unknown outcome always is.
        return on_failure(state, unit, fact, now_ms, key_retention)
    if unit.effects and called and (failure_class == UNKNOWN_OUTCOME or accepted):
        what = "the provider accepted it" if accepted else "its outcome is unknown"
        why = f"canceled by {_who(state)} while attempt {fact.attempt} was in flight; {what}"
        return quarantine(
            state,
            unit.step,
            now_ms,
            why,
            failure_class,
            error=fact.error,
            key=fact.idempotency_key,
            evidence=fact,
            call=unit.call,
        )
    step = unit_state(state, unit)
    step.status, step.deadline = STEP_CANCELED, None  # settled: the attempt had no effect
    return settle_cancel(state, now_ms)


def timed_out_while_canceling(state: RunState, unit: Unit, now_ms: int) -> Decision:
    step = unit_state(state, unit)
    if unit.effects:
        why = f"canceled by {_who(state)}; attempt {step.attempt} was in flight and timed out"
        return quarantine(
            state, unit.step, now_ms, f"{why}: outcome unknown", UNKNOWN_OUTCOME, call=unit.call
        )
    step.status, step.deadline = STEP_CANCELED, None  # an llm attempt has no effect to wait for
    return settle_cancel(state, now_ms)


def settle_cancel(state: RunState, now_ms: int) -> Decision:
    if state.in_flight() or any(_settling(sub) for sub in state.all_units()):
        return Decision(state, [])
    return _end_canceled(state, now_ms)


def settle_again(state: RunState, unit: Unit, now_ms: int) -> list[RunEvent | StepCommand]:
    """The repeat that settles an unknown outcome while canceling: the same input and key, and no
    reservation (the key's first attempt reserved its cost; a repeat is answered, not charged again)."""
    return [command(state, unit, unit_state(state, unit).attempt + 1, now_ms)]


def _settling(sub: StepState) -> bool:
    """A unit waiting to repeat an attempt whose outcome is unknown, under a mode that makes it safe
    (only such a unit waits to retry after an unknown outcome: otherwise it is held at once)."""
    return sub.status == WAITING_RETRY and sub.last_failure == UNKNOWN_OUTCOME


def _end_canceled(state: RunState, now_ms: int) -> Decision:
    for step in state.steps.values():
        if step.status in (WAITING_RETRY, RESERVING) or (
            step.agent is not None and step.status == DISPATCHED
        ):
            step.status, step.fire_at = STEP_CANCELED, None
    reason = f"canceled by {_who(state)}: {state.cancel_reason or 'no reason given'}"
    return end(state, ev.CANCELED, now_ms, reason)


def _close_cases(state: RunState, cmd: ControlCommand, now_ms: int) -> list[Emitted]:
    """A canceled run's open cases close with it (decision `cancel`, by whoever canceled it): a held step
    or a waiting approval is not left in the queue of a run that has ended. A step waiting for its
    approval is canceled: nothing was sent."""
    closed: list[Emitted] = []
    who = cmd.issued_by or "an unnamed operator"
    for case_id, case in state.cases.items():
        if case.get("decision"):
            continue
        case.update(decision=CANCEL, decided_by=who, command_id=cmd.command_id, decided_at=now_ms)
        step = state.steps.get(case["step"])
        if step is not None and step.status == AWAITING_APPROVAL:
            step.status, step.fire_at = STEP_CANCELED, None
        reason = f"the run was canceled: {cmd.reason or 'no reason given'}"
        record = {
            "case_id": case_id,
            "decision": CANCEL,
            "reason": reason,
            "decided_by": who,
            "command_id": cmd.command_id,
            "previous_key": case.get("key"),
            "key": case.get("key"),
        }
        out_json, out_ref = ev.inline(record)
        closed.append(
            event(
                state,
                ev.QUARANTINE_RESOLVED,
                now_ms,
                case["step"],
                case.get("attempt") or 0,
                cmd.command_id,
                call=case.get("call"),
                idempotency_key=case.get("key"),
                output_json=out_json,
                output_ref=out_ref,
                quarantine=QuarantineDetail(case_id=case_id, reason=reason, decision=CANCEL, decided_by=who),
            )
        )
    return closed


def _record_held_turns(state: RunState) -> None:
    """An agent turn's answer that came while paused (kept for the resume) is recorded as the turn's
    commit: no call it asks for is made now, as for an answer that comes while canceling."""
    for step in state.steps.values():
        model = step.agent.model if step.agent is not None else None
        if model is not None and model.status == DISPATCHED and model.output is not None:
            model.status, model.deadline = COMMITTED, None


def _who(state: RunState) -> str:
    return state.canceled_by or "an unnamed operator"
