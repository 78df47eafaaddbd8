"""The scheduler's facts about a run: how each is built, and the verdicts that stop a run or hold it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keel import events as ev
from keel.claimcheck import ref_of_marker
from keel.contracts import BudgetCommand, ControlCommand, QuarantineDetail, RunDetail, RunEvent, StepCommand
from keel.vocab import UNKNOWN_OUTCOME
from services.scheduler.state import FAILED, QUARANTINED, RUN_FAILED, RunState

Emitted = RunEvent | StepCommand | BudgetCommand


@dataclass
class Decision:
    state: RunState | None
    outputs: list[Emitted]


def event(
    state: RunState,
    kind: str,
    now_ms: int,
    step: str | None = None,
    attempt: int = 0,
    extra: str = "",
    *,
    call: str | None = None,
    **fields: Any,
) -> RunEvent:
    return RunEvent(
        event_id=ev.event_id(state.run_id, kind, step, attempt, extra, call),
        run_id=state.run_id,
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        step=step,
        event=kind,
        ts=ev.at_ms(now_ms),
        attempt=attempt,
        source="scheduler",
        trace_id=state.trace_id,
        call=call,
        **fields,
    )


def end(state: RunState, status: str, now_ms: int, reason: str | None = None, **fields: Any) -> Decision:
    """The run becomes terminal (completed, failed, canceled); `ended_at` starts its retention clock."""
    state.status, state.ended_at = status, now_ms
    if reason is not None:
        fields.setdefault("error", reason)
    return Decision(
        state, [event(state, status, now_ms, run=RunDetail(status=status, reason=reason), **fields)]
    )


def fail(state: RunState, now_ms: int, reason: str, step: str | None = None) -> Decision:
    if step:
        state.steps[step].status = FAILED
    return end(state, RUN_FAILED, now_ms, reason)


def quarantine(
    state: RunState,
    step_name: str,
    now_ms: int,
    reason: str,
    failure_class: str | None,
    *,
    error: str | None = None,
    key: str | None = None,
    evidence: RunEvent | None = None,
    call: str | None = None,
    details: Any = None,
) -> Decision:
    """Hold the run for a human. `evidence` is the fact that proved or suggested an effect: its input and
    output (refs, and the output itself) travel on the quarantined event, so the case can be judged from
    it alone; `details` is evidence the scheduler gathered itself (an agent's refused calls), as output.
    The input the held unit was sent is the case's input (what an edit replaces). `call` names the agent
    sub-step the case is about."""
    state.status = QUARANTINED
    state.paused_by = state.pause_reason = None  # a case opened while paused replaces the pause
    step = state.steps[step_name]
    step.deadline = step.fire_at = None
    held = step
    if call is not None and step.agent is not None and call in step.agent.units():
        held = step.agent.units()[call]
        held.deadline = held.fire_at = None
    proof: dict[str, Any] = {}
    if evidence is not None:
        proof = {
            "input_ref": evidence.input_ref,
            "output_ref": evidence.output_ref,
            "output_json": evidence.output_json,
        }
    elif details is not None:
        proof["output_json"], proof["output_ref"] = ev.inline(details)
    shown = shown_input(held.input_json)
    if shown is not None:
        proof["input_json"], proof["input_ref"] = shown
    where = step_name if call is None else f"{step_name}:{call}"
    case = f"{state.run_id}:{where}:{held.attempt}"
    state.cases[case] = {
        "kind": "quarantine",
        "step": step_name,
        "call": call,
        "attempt": held.attempt,
        "key": key or held.idempotency_key,
        "failure_class": failure_class,
        # Whether the effect may exist at the provider: then an edit (a new payload under a new key)
        # would make a second one, so a decision must acknowledge it (docs/quarantine.md).
        "effect_possible": failure_class == UNKNOWN_OUTCOME
        or bool(evidence is not None and evidence.tool is not None and evidence.tool.effect_accepted),
        "opened_at": now_ms,
    }
    return Decision(
        state,
        [
            event(
                state,
                ev.QUARANTINED,
                now_ms,
                step_name,
                held.attempt,
                call=call,
                agent_id=evidence.agent_id if evidence is not None else None,
                idempotency_key=key or held.idempotency_key,
                error=error,
                quarantine=QuarantineDetail(case_id=case, reason=reason, failure_class=failure_class),
                **proof,
            )
        ],
    )


def shown_input(input_json: str | None) -> tuple[str, str] | None:
    """(JSON, content ref) of a unit's rendered input as a case shows it to a human: a tool's payload (what
    the provider is sent: what an approval binds, what an edit replaces), else the whole input. None when
    it was never rendered or is kept in the blob store (its claim check)."""
    if input_json is None:
        return None
    value = json.loads(input_json)
    if ref_of_marker(value) is not None:
        return None
    if isinstance(value, dict) and set(value) == {"tool", "payload"}:
        value = value["payload"]
    return ev.inline(value)


def refused(
    state: RunState,
    cmd: ControlCommand,
    why: str,
    now_ms: int,
    *,
    case_id: str | None = None,
    decision: str | None = None,
    step: str | None = None,
    call: str | None = None,
) -> Decision:
    """A decision that does not apply: a `decision_refused` fact saying why, and nothing else changes.
    Its id follows from the command's, so a redelivered command gives the same fact."""
    record = {"case_id": case_id, "decision": decision, "command_id": cmd.command_id}
    out_json, out_ref = ev.inline(record)
    fact = RunEvent(
        event_id=ev.event_id(state.run_id, ev.DECISION_REFUSED, extra=cmd.command_id),
        run_id=state.run_id,
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        step=step,
        call=call,
        event=ev.DECISION_REFUSED,
        ts=ev.at_ms(now_ms),
        source="scheduler",
        trace_id=state.trace_id,
        error=why,
        output_json=out_json,
        output_ref=out_ref,
    )
    return Decision(state, [fact])
