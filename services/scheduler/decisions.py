"""Decisions on quarantine cases in the scheduler's pure core (docs/quarantine.md): retry, edit, skip, fail.

A decision is a control command judged against the run's own state, one message at a time: it applies
to the case the run is held on, exactly once (a second decision on a case is refused, whoever sends it
and whatever order two arrive in), and every applied decision is a `quarantine_resolved` fact with who,
why, and the keys before and after. A decision that cannot apply changes nothing and says why
(`decision_refused`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel import events as ev
from keel.contracts import CommitDetail, ControlCommand, QuarantineDetail, RunEvent
from keel.idempotency import canonical_json, idempotency_key
from keel.vocab import CASE_APPROVAL, EDIT, FAIL, QUARANTINE_DECISIONS, RETRY, SKIP
from keel.workflows import StepSpec, WorkflowSpec
from services.scheduler import agent, approvals, budgets, cancel, dispatch, supplied
from services.scheduler.env import Env
from services.scheduler.state import CANCELING, COMMITTED, QUARANTINED, RUNNING, TERMINAL, RunState, StepState
from services.scheduler.units import Unit, units_of
from services.scheduler.verdicts import Decision, Emitted, event, fail, refused

Refuse = Callable[[str], Decision]  # the refusal of the decision at hand, with why


@dataclass(frozen=True)
class Held:
    """What a quarantine case holds: the unit (None: an agent step's own case, its model having broken
    its contract), the unit's state, and the step's spec."""

    case_id: str
    case: dict[str, Any]
    unit: Unit | None
    sub: StepState
    step: StepSpec


def on_decide(state: RunState, cmd: ControlCommand, spec: WorkflowSpec, now_ms: int, env: Env) -> Decision:
    """Apply a `decide` command (args_json {"case_id", "decision", "input"?, "output"?, "new_effect"?}),
    or refuse it with the reason."""
    args = _args(cmd)
    if isinstance(args, str):
        return refused(state, cmd, args, now_ms)
    case_id, word = args["case_id"], args["decision"]
    case = state.cases.get(case_id)

    def no(why: str) -> Decision:
        where = {"step": case.get("step"), "call": case.get("call")} if case is not None else {}
        return refused(state, cmd, why, now_ms, case_id=case_id, decision=word, **where)

    if case is not None and case.get("decision"):
        return no(
            f"case {case_id} was already decided: {case['decision']} by {case.get('decided_by')} "
            f"(command {case.get('command_id')})"
        )
    if state.status in TERMINAL:  # an ended run's state may be only its marker, without its cases
        return no(f"run {state.run_id} has ended ({state.status}): no decision applies to it any more")
    if case is None:
        return no(f"run {state.run_id} has no case {case_id}")
    if case.get("kind") == CASE_APPROVAL:
        return approvals.decide(state, cmd, args, spec, now_ms, env)
    if state.status != QUARANTINED:
        return no(f"run {state.run_id} is {state.status}, not held on case {case_id}")
    if word not in QUARANTINE_DECISIONS:
        allowed = ", ".join(sorted(QUARANTINE_DECISIONS))
        return no(f"{word!r} is not a decision on a quarantine case ({allowed})")
    held = _held(state, spec, case_id, case)
    if isinstance(held, str):
        return no(held)
    if word == FAIL:
        return _fail(state, held, cmd, now_ms)
    if state.canceled_by is not None:
        if word in (RETRY, EDIT):
            return no(
                f"run {state.run_id} is being canceled by {state.canceled_by}: no new attempt starts; "
                "decide skip (the effect exists: its output) or fail, or cancel again to end it canceled"
            )
    if word == RETRY:
        return _retry(state, held, cmd, spec, now_ms, env, no)
    if word == EDIT:
        return _edit(state, held, cmd, args, now_ms, env, no)
    return _skip(state, held, cmd, args, spec, now_ms, env, no)


def _args(cmd: ControlCommand) -> dict[str, Any] | str:
    try:
        args = json.loads(cmd.args_json) if cmd.args_json else None
    except ValueError as exc:
        return f"args_json is not valid JSON: {exc}"
    if not isinstance(args, dict):
        return 'a decision needs args_json, a JSON object {"case_id", "decision", ...}'
    for name in ("case_id", "decision"):
        if not isinstance(args.get(name), str) or not args[name]:
            return f"args_json.{name} must be a non-empty string"
    if "new_effect" in args and not isinstance(args["new_effect"], bool):
        return "args_json.new_effect must be true or false"
    return args


def _held(state: RunState, spec: WorkflowSpec, case_id: str, case: dict[str, Any]) -> Held | str:
    """The unit the case holds, or why the case is not the one the run is held on."""
    name, call = case.get("step") or "", case.get("call")
    if name not in state.steps:
        return f"case {case_id} names step {name!r}, which this run does not have"
    step_spec = spec.step(name)
    step = state.steps[name]
    if call is None and step.agent is not None:
        unit, sub = None, step
    else:
        found = [(u, s) for u, s in units_of(state, step_spec) if u.call == call]
        if not found:
            return f"case {case_id}: {name} {call} is not part of the step's current turn any more"
        unit, sub = found[0]
    if sub.attempt != case.get("attempt"):
        return f"case {case_id} is superseded: {name} is at attempt {sub.attempt} now"
    return Held(case_id, case, unit, sub, step_spec)


def _resolved(
    state: RunState,
    held: Held,
    cmd: ControlCommand,
    word: str,
    now_ms: int,
    *,
    key: str | None,
    previous_key: str | None = None,
    extra: dict[str, Any] | None = None,
    input_json: str | None = None,
) -> RunEvent:
    """Close the case: its record in the run's state, and the `quarantine_resolved` fact."""
    who = cmd.issued_by or "an unnamed operator"
    reason = cmd.reason or "no reason given"
    held.case.update(decision=word, decided_by=who, command_id=cmd.command_id, decided_at=now_ms)
    record = {
        "case_id": held.case_id,
        "decision": word,
        "reason": reason,
        "decided_by": who,
        "command_id": cmd.command_id,
        "previous_key": previous_key or held.case.get("key") or held.sub.idempotency_key,
        "key": key,
        **(extra or {}),
    }
    out_json, out_ref = ev.inline(record)
    return event(
        state,
        ev.QUARANTINE_RESOLVED,
        now_ms,
        held.step.name,
        held.case.get("attempt") or 0,
        call=held.case.get("call"),
        agent_id=held.step.agent,
        idempotency_key=key,
        input_json=input_json,
        output_json=out_json,
        output_ref=out_ref,
        quarantine=QuarantineDetail(
            case_id=held.case_id,
            reason=reason,
            failure_class=held.case.get("failure_class"),
            decision=word,
            decided_by=who,
        ),
    )


def _fail(state: RunState, held: Held, cmd: ControlCommand, now_ms: int) -> Decision:
    resolved = _resolved(state, held, cmd, FAIL, now_ms, key=held.sub.idempotency_key)
    who = cmd.issued_by or "an unnamed operator"
    reason = f"case {held.case_id}: {who} decided to fail the run: {cmd.reason or 'no reason given'}"
    return Decision(state, [resolved, *fail(state, now_ms, reason, held.step.name).outputs])


def _retry(
    state: RunState, held: Held, cmd: ControlCommand, spec: WorkflowSpec, now_ms: int, env: Env, no: Refuse
) -> Decision:
    if held.unit is None:
        return no(
            f"agent step {held.step.name}'s model broke its contract: a retry would ask it again with the "
            "same conversation; decide skip (the step's output) or fail"
        )
    resolved = _resolved(state, held, cmd, RETRY, now_ms, key=held.sub.idempotency_key)
    state.status = RUNNING
    if held.sub.status == COMMITTED:  # it committed while held: its effect is recorded, the run goes on
        return Decision(state, [resolved, *_after_unit_commit(state, held, spec, now_ms, env)])
    held.sub.last_failure = None
    attempt = budgets.begin(state, held.unit, held.sub.attempt + 1, now_ms, env.budgets)
    return Decision(state, [resolved, *attempt])


def _edit(
    state: RunState, held: Held, cmd: ControlCommand, args: dict[str, Any], now_ms: int, env: Env, no: Refuse
) -> Decision:
    unit, sub = held.unit, held.sub
    if unit is None or unit.kind != "tool":
        return no(f"edit applies to tool steps only: {held.step.name} is a {held.step.kind} step")
    if supplied.answers_another(state, unit):
        return no(
            f"{unit.label}'s result also answers the same write asked again in its turn: its arguments are "
            "not edited; decide retry, skip (the call's result) or fail"
        )
    if sub.status == COMMITTED:
        return no(f"{unit.label} committed while held (its effect is recorded): decide retry to go on")
    payload = args.get("input")
    if not isinstance(payload, dict):
        return no("edit needs args_json.input: the tool's new payload, a JSON object")
    problems = supplied.input_problems(env, unit, payload)
    if isinstance(problems, str):
        return no(problems)
    if problems:
        return no(f"the edited input breaks {unit.tool}'s input schema: {'; '.join(problems)}")
    if held.case.get("effect_possible", True) and args.get("new_effect") is not True:
        return no(
            f"case {held.case_id}: the provider may already have made this effect "
            f"({held.case.get('failure_class')}): an edited input goes under a new key, a second effect. "
            "Send new_effect: true to acknowledge it, or decide retry (same key), skip or fail"
        )
    previous = sub.idempotency_key
    if unit.call is None:
        key = idempotency_key(state.tenant_id, state.workflow, state.run_id, unit.step, payload)
    else:
        key = supplied.edit_call(state, unit, payload)
    sub.input_json = canonical_json({"tool": unit.tool, "payload": payload})
    if key != previous:  # a new key's retention window starts at its first use
        sub.idempotency_key, sub.first_issued_at = key, now_ms
    sub.last_failure = None
    extra = {"input": payload, "new_effect": bool(args.get("new_effect"))}
    resolved = _resolved(
        state, held, cmd, EDIT, now_ms, key=key, previous_key=previous, extra=extra, input_json=sub.input_json
    )
    state.status = RUNNING
    return Decision(state, [resolved, *budgets.begin(state, unit, sub.attempt + 1, now_ms, env.budgets)])


def _skip(
    state: RunState,
    held: Held,
    cmd: ControlCommand,
    args: dict[str, Any],
    spec: WorkflowSpec,
    now_ms: int,
    env: Env,
    no: Refuse,
) -> Decision:
    unit, sub = held.unit, held.sub
    if unit is not None and unit.kind == "agent":
        return no(f"{unit.label} is a model turn: it has no output to supply; decide retry or fail")
    if sub.status == COMMITTED:
        return no(f"{held.step.name} committed while held (its output is recorded): decide retry to go on")
    if "output" not in args:
        return no("skip needs args_json.output: the step's output")
    output = args["output"]
    problems = supplied.output_problems(env, unit, held.step, output)
    if isinstance(problems, str):
        return no(problems)
    if problems:
        whose = supplied.whose(unit, held.step)
        return no(f"the supplied output breaks {whose} output schema: {'; '.join(problems)}")
    resolved = _resolved(state, held, cmd, SKIP, now_ms, key=sub.idempotency_key, extra={"output": output})
    sub.status, sub.output, sub.fire_at, sub.deadline = COMMITTED, output, None, None
    out_json, out_ref = ev.inline(output)
    committed = event(
        state,
        ev.STEP_COMMITTED,
        now_ms,
        held.step.name,
        sub.attempt,
        SKIP,  # beside the ledger's or executor's own commit of the same attempt, should it come late
        call=unit.call if unit else None,
        agent_id=held.step.agent,
        idempotency_key=sub.idempotency_key,
        output_json=out_json,
        output_ref=out_ref,
        commit=CommitDetail(committed_at=ev.at_ms(now_ms)),
    )
    state.status = CANCELING if state.canceled_by is not None else RUNNING
    return Decision(state, [resolved, committed, *_after_unit_commit(state, held, spec, now_ms, env)])


def _after_unit_commit(
    state: RunState, held: Held, spec: WorkflowSpec, now_ms: int, env: Env
) -> list[Emitted]:
    if state.status == CANCELING:
        return cancel.settle_cancel(state, now_ms).outputs
    if held.unit is not None and held.unit.call is not None:  # the call's result goes back to the model
        return agent.after_call(state, held.step, env, now_ms)
    return go_on(state, spec, now_ms, env)


def go_on(state: RunState, spec: WorkflowSpec, now_ms: int, env: Env) -> list[Emitted]:
    """After a commit: the run completes, or the steps it unblocked start (core's after-commit rule)."""
    return dispatch.advance(state, spec, now_ms, env)
