"""Approvals (docs/quarantine.md): a step that may not act before a human says yes.

An `approval` step asks its rendered prompt; a tool step with `requires_approval` shows its rendered input
and the idempotency key it will be sent under. Either opens an approval case (`approval_requested`) and
waits AWAITING_APPROVAL until a decision or its deadline, a durable timer in the run's state (`fire_at`).

The approval is bound to the payload: `approve` must name the case's exact input ref and key, and the
attempt it releases carries exactly the input and key kept in the step's state since they were shown, so
an approval for one payload can never release another. Every decision closes the case once
(`quarantine_resolved`); any later one is refused (`decision_refused`).
"""

from __future__ import annotations

import json
from typing import Any

from keel import events as ev
from keel.contracts import CommitDetail, ControlCommand, QuarantineDetail, RunEvent
from keel.vocab import APPROVAL_DECISIONS, APPROVE, CASE_APPROVAL, DENY, EXPIRE
from keel.workflows import ApprovalPolicy, StepSpec, WorkflowSpec
from services.scheduler import dispatch, fallbacks
from services.scheduler.env import Env
from services.scheduler.state import (
    AWAITING_APPROVAL,
    COMMITTED,
    PAUSED,
    PENDING,
    QUARANTINED,
    RUNNING,
    RunState,
    StepState,
)
from services.scheduler.verdicts import Decision, Emitted, event, fail, shown_input

SCHEDULER = "scheduler"  # who decides an approval whose deadline passed
# A decision is recorded while the run runs, is paused (it applies on resume) or holds another step.
_DECIDABLE = (RUNNING, PAUSED, QUARANTINED)


def released(step: StepState) -> bool:
    """Whether a human approved the step's payload (its attempts may go out)."""
    return step.approval is not None and step.approval.get("decision") == APPROVE


def request(state: RunState, spec: StepSpec, now_ms: int) -> list[Emitted]:
    """Open the step's approval case: its input and key are already rendered and fixed in its state."""
    step = state.steps[spec.name]
    if step.approval is not None:  # a case is open (or decided) already: never a second one
        return []
    policy = spec.approval_policy or ApprovalPolicy()
    n = 1 + sum(1 for c in state.cases.values() if c.get("kind") == CASE_APPROVAL and c["step"] == spec.name)
    case = f"{state.run_id}:{spec.name}:approval-{n}"
    # What a human approves is what the tool is sent: the payload (its ref is what the adapters check the
    # grant against), under the key shown; an approval step's input is its rendered prompt. Both are
    # rendered in this very decision, never a claim check yet.
    shown = shown_input(step.input_json or "{}")
    assert shown is not None, f"step {spec.name}'s input is not rendered"
    input_json, input_ref = shown
    deadline = now_ms + policy.timeout_ms
    rule = policy.timeout_rule
    state.cases[case] = {
        "kind": CASE_APPROVAL,
        "step": spec.name,
        "input_ref": input_ref,
        "key": step.idempotency_key,
        "deadline": deadline,
        "on_timeout": rule,
        "opened_at": now_ms,
    }
    step.approval = {
        "case_id": case,
        "input_ref": input_ref,
        "key": step.idempotency_key,
        "deadline": deadline,
        "on_timeout": rule,
    }
    step.status, step.fire_at, step.deadline = AWAITING_APPROVAL, deadline, None
    out_json, _ = ev.inline({"deadline": deadline, "on_timeout": rule})
    return [
        event(
            state,
            ev.APPROVAL_REQUESTED,
            now_ms,
            spec.name,
            step.attempt,
            f"approval-{n}",
            input_json=input_json,
            input_ref=input_ref,
            idempotency_key=step.idempotency_key,
            output_json=out_json,
            quarantine=QuarantineDetail(case_id=case, reason=_question(spec, input_json)),
        )
    ]


def _question(spec: StepSpec, input_json: str) -> str:
    if spec.kind == "approval":
        return str(json.loads(input_json).get("prompt", ""))
    return f"may step {spec.name} call {spec.tool} with the input shown, under the key shown?"


def decide(
    state: RunState, cmd: ControlCommand, args: dict[str, Any], spec: WorkflowSpec, now_ms: int, env: Env
) -> Decision:
    """A human's decision on an approval case (args: {"case_id", "decision", "bound_to"?})."""
    case_id, decision = args.get("case_id"), args.get("decision")
    record = state.cases.get(case_id) if isinstance(case_id, str) else None
    if record is None or record.get("kind") != CASE_APPROVAL:
        return _refused(state, cmd, args, None, f"no approval case {case_id!r} in run {state.run_id}", now_ms)
    step_name = record["step"]
    if "decision" in record:
        why = f"case {case_id} was already decided: {record['decision']} by {record.get('decided_by')}"
        return _refused(state, cmd, args, step_name, why, now_ms)
    if decision not in APPROVAL_DECISIONS:
        why = (
            f"{decision!r} is not a decision on an approval (one of {', '.join(sorted(APPROVAL_DECISIONS))})"
        )
        return _refused(state, cmd, args, step_name, why, now_ms)
    if state.status not in _DECIDABLE or state.steps[step_name].status != AWAITING_APPROVAL:
        why = f"run is {state.status} and step {step_name} is {state.steps[step_name].status}"
        return _refused(state, cmd, args, step_name, why, now_ms)
    if decision == APPROVE:
        shown = {"input_ref": record["input_ref"], "idempotency_key": record["key"]}
        if args.get("bound_to") != shown:
            why = (
                f"the approval is bound to {args.get('bound_to')!r} but case {case_id} shows {shown!r}: "
                "the payload differs, and an approval for one payload can never release another"
            )
            return _refused(state, cmd, args, step_name, why, now_ms)
    who = cmd.issued_by or "an unnamed operator"
    outputs = _resolve(state, record, case_id or "", decision, who, cmd.reason, cmd.command_id, now_ms)
    step_spec = spec.step(step_name)
    if decision == APPROVE:
        return Decision(state, outputs + _release(state, spec, step_spec, who, cmd.reason, now_ms, env))
    if decision == DENY:
        why = f"step {step_name}: approval {case_id} denied by {who}: {cmd.reason or 'no reason given'}"
        return Decision(state, outputs + _denied(state, spec, step_spec, why, now_ms, env))
    why = f"step {step_name}: approval {case_id}: {who} failed the run: {cmd.reason or 'no reason given'}"
    return Decision(state, outputs + fail(state, now_ms, why, step_name).outputs)


def expire(state: RunState, spec: WorkflowSpec, step_name: str, now_ms: int, env: Env) -> list[Emitted]:
    """The approval's deadline passed with no decision: the scheduler decides `expire`, and the step's
    rule applies (deny: as a human's deny; fallback: the fallback step stands in for it)."""
    step = state.steps[step_name]
    if step.status != AWAITING_APPROVAL or step.approval is None:
        return []
    case_id = step.approval["case_id"]
    record = state.cases[case_id]
    why = f"no decision before the deadline (on_timeout: {record['on_timeout']})"
    outputs = _resolve(state, record, case_id, EXPIRE, SCHEDULER, why, None, now_ms)
    step_spec = spec.step(step_name)
    policy = step_spec.approval_policy or ApprovalPolicy()
    because = f"step {step_name}: approval {case_id} expired: {why}"
    if isinstance(policy.on_timeout, str):
        return outputs + _denied(state, spec, step_spec, because, now_ms, env)
    fell = fallbacks.degrade(
        state, step_name, policy.on_timeout.fallback, now_ms, because=because, failure_class=None
    )
    if fell is None:  # the fallback cannot start (it ran already): the run cannot go on
        return outputs + fail(state, now_ms, because, step_name).outputs
    return outputs + fell.outputs + _go_on(state, spec, now_ms, env)


def _resolve(
    state: RunState,
    record: dict[str, Any],
    case_id: str,
    decision: str,
    who: str,
    reason: str | None,
    command_id: str | None,
    now_ms: int,
) -> list[Emitted]:
    """Close the case for good: the record says who decided what, and a second decision is refused."""
    step = state.steps[record["step"]]
    record.update(decision=decision, decided_by=who, decided_at=now_ms, command_id=command_id, reason=reason)
    if step.approval is not None:
        step.approval.update(decision=decision, decided_by=who, decided_at=now_ms)
    step.fire_at = None
    out = {
        "case_id": case_id,
        "decision": decision,
        "reason": reason,
        "decided_by": who,
        "command_id": command_id,
        "previous_key": record["key"],
        "key": record["key"],
    }
    out_json, _ = ev.inline(out)
    return [
        event(
            state,
            ev.QUARANTINE_RESOLVED,
            now_ms,
            record["step"],
            step.attempt,
            case_id.rsplit(":", 1)[-1],
            idempotency_key=record["key"],
            output_json=out_json,
            quarantine=QuarantineDetail(
                case_id=case_id, reason=reason or decision, decision=decision, decided_by=who
            ),
        )
    ]


def _release(
    state: RunState,
    spec: WorkflowSpec,
    step_spec: StepSpec,
    who: str,
    reason: str | None,
    now_ms: int,
    env: Env,
) -> list[Emitted]:
    """Approved: an approval step commits its answer; a tool step is ready for its first attempt, issued
    now if the run is running (on resume if it is paused), with the input and key that were shown."""
    step = state.steps[step_spec.name]
    if step_spec.kind == "approval":
        step.status, step.fire_at = COMMITTED, None
        step.output = {"approved": True, "by": who, "reason": reason}
        out_json, out_ref = ev.inline(step.output)
        committed = event(
            state,
            ev.STEP_COMMITTED,
            now_ms,
            step_spec.name,
            step.attempt,
            output_json=out_json,
            output_ref=out_ref,
            commit=CommitDetail(committed_at=ev.at_ms(now_ms)),
        )
        if state.status != RUNNING:
            return [committed]
        return [committed] + dispatch.advance(state, spec, now_ms, env)
    # The key's first possible use is now, not when it was shown (provider key retention counts from it).
    step.status, step.fire_at, step.first_issued_at = PENDING, None, now_ms
    if state.status != RUNNING:
        return []
    return dispatch.issue(state, step_spec, 1, now_ms, env)


def _denied(
    state: RunState, spec: WorkflowSpec, step_spec: StepSpec, why: str, now_ms: int, env: Env
) -> list[Emitted]:
    """Denied (by a human, or by the deadline's rule): the step's on_failure fallback, else the run fails."""
    to = step_spec.on_failure.fallback if step_spec.on_failure else None
    fell = fallbacks.degrade(state, step_spec.name, to, now_ms, because=why, failure_class=None, error=why)
    if fell is None:
        return fail(state, now_ms, why, step_spec.name).outputs
    return fell.outputs + _go_on(state, spec, now_ms, env)


def _go_on(state: RunState, spec: WorkflowSpec, now_ms: int, env: Env) -> list[Emitted]:
    return dispatch.advance(state, spec, now_ms, env) if state.status == RUNNING else []


def _refused(
    state: RunState, cmd: ControlCommand, args: dict[str, Any], step: str | None, why: str, now_ms: int
) -> Decision:
    """A decision that does not apply: a `decision_refused` fact saying why, nothing else changes. Its
    id follows from the command's (`RUN:0:decision_refused:COMMAND_ID`, as for quarantine decisions), so
    a redelivered command gives the same fact."""
    record = {"case_id": args.get("case_id"), "decision": args.get("decision"), "command_id": cmd.command_id}
    out_json, out_ref = ev.inline(record)
    fact = RunEvent(
        event_id=ev.event_id(state.run_id, ev.DECISION_REFUSED, extra=cmd.command_id),
        run_id=state.run_id,
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        step=step,
        event=ev.DECISION_REFUSED,
        ts=ev.at_ms(now_ms),
        source="scheduler",
        trace_id=state.trace_id,
        error=why,
        output_json=out_json,
        output_ref=out_ref,
    )
    return Decision(state, [fact])
