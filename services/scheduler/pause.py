"""Pause and resume in the scheduler's pure core (docs/quarantine.md).

A paused run starts no new attempt and fires no timer (`due` and `next_timer` act on running and
canceling runs only); calls in flight settle and are recorded: a commit is kept (nothing is dispatched
after it), a failure schedules its retry as usual, an agent turn's answer is held until the resume. A
reservation the enforcer has not answered yet is given back, so a paused run holds no budget; its
attempt asks again, under a new attempt number (a reservation id is never reused), on resume.

Pause applies to a running run only, resume to a paused one: any other is a no-op (a repeat of either
changes nothing), and the run's events say whether it applied (a `paused` or `resumed` fact).
"""

from __future__ import annotations

import json

from keel import events as ev
from keel.contracts import BudgetCommand, ControlCommand, RunDetail, RunEvent
from keel.idempotency import turn_name
from keel.workflows import StepSpec, WorkflowSpec
from services.scheduler import agent, budgets
from services.scheduler.decisions import go_on
from services.scheduler.env import Env
from services.scheduler.state import (
    COMMITTED,
    DISPATCHED,
    PAUSED,
    RESERVING,
    RUNNING,
    WAITING_RETRY,
    RunState,
)
from services.scheduler.units import Unit, agent_of, units_of
from services.scheduler.verdicts import Decision, Emitted, event

HELD = "held_answer"  # the key an agent turn's answer is kept under while its run is paused


def on_pause(state: RunState, cmd: ControlCommand, spec: WorkflowSpec, now_ms: int, env: Env) -> Decision:
    if state.status != RUNNING:
        return Decision(state, [])
    who = cmd.issued_by or "an unnamed operator"
    state.status, state.paused_by, state.pause_reason = PAUSED, who, cmd.reason
    outputs: list[Emitted] = [
        event(
            state,
            ev.PAUSED,
            now_ms,
            extra=cmd.command_id,
            run=RunDetail(status=PAUSED, reason=f"paused by {who}: {cmd.reason or 'no reason given'}"),
        )
    ]
    for name in state.steps:
        for unit, sub in units_of(state, spec.step(name)):
            if sub.status != RESERVING:
                continue
            outputs.append(_give_back(state, unit, sub.attempt, now_ms))
            # Back to waiting, due at once on resume; the attempt never started, so it is not counted.
            sub.status, sub.fire_at, sub.reserve_since, sub.reserve_tries = WAITING_RETRY, now_ms, None, 0
            sub.blocked += 1
    return Decision(state, outputs)


def _give_back(state: RunState, unit: Unit, attempt: int, now_ms: int) -> BudgetCommand:
    """Close the attempt's reservation: a grant the enforcer made (or is about to make: the close follows
    the reserve on the tenant's partition) is released; a reserve it deferred is a no-op."""
    rid = budgets.reservation_id(state.run_id, unit.step, unit.call, attempt)
    return BudgetCommand(
        command_id=f"{rid}:pause:close",
        action="close",
        tenant_id=state.tenant_id,
        run_id=state.run_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        task_id=state.task_id,
        issued_at=ev.at_ms(now_ms),
        trace_id=state.trace_id,
        step=unit.step,
        call=unit.call,
        attempt=attempt,
        agent_id=unit.agent_id,
        reservation_id=rid,
    )


def hold_turn(state: RunState, step: StepSpec, fact: RunEvent) -> Decision:
    """An agent turn's answer while paused: kept in the turn's model call (unsettled, with no timer), and
    acted on at the resume; a cancel meanwhile records it (cancel.on_cancel). As on a running run, a late
    answer of the current turn counts even if its attempt was given up on (a retry waiting)."""
    loop = agent_of(state, step.name)
    if fact.call == turn_name(loop.turn) and loop.model.status != COMMITTED:
        model = loop.model
        model.status, model.deadline, model.fire_at = DISPATCHED, None, None
        # Wrapped: whatever the answer is (even null), a held answer is never mistaken for none.
        model.output = {HELD: json.loads(fact.output_json or "null")}
    return Decision(state, [])


def on_resume(state: RunState, cmd: ControlCommand, spec: WorkflowSpec, now_ms: int, env: Env) -> Decision:
    if state.status != PAUSED:
        return Decision(state, [])
    who = cmd.issued_by or "an unnamed operator"
    state.status, state.paused_by, state.pause_reason = RUNNING, None, None
    outputs: list[Emitted] = [
        event(
            state,
            ev.RESUMED,
            now_ms,
            extra=cmd.command_id,
            run=RunDetail(status=RUNNING, reason=f"resumed by {who}: {cmd.reason or 'no reason given'}"),
        )
    ]
    for name in list(state.steps):
        step_spec = spec.step(name)
        outputs += _catch_up(state, step_spec, now_ms, env)
        if state.status != RUNNING:
            return Decision(state, outputs)
    outputs += go_on(state, spec, now_ms, env)  # commits kept while paused: the run completes or goes on
    return Decision(state, outputs)


def _catch_up(state: RunState, step: StepSpec, now_ms: int, env: Env) -> list[Emitted]:
    """What the pause held back for one step: its waiting units that are due start their next attempt;
    an agent turn whose answer came, or whose calls all committed, moves the loop on."""
    sub_state = state.steps[step.name]
    loop = sub_state.agent
    if loop is not None and sub_state.status == DISPATCHED:
        if loop.model.status == DISPATCHED and isinstance(loop.model.output, dict):
            answer = loop.model.output.get(HELD)
            loop.model.output = None
            return _turn(state, step, answer, env, now_ms)
        if agent.turn_done(state, step):
            return agent.after_call(state, step, env, now_ms)
    outputs: list[Emitted] = []
    for unit, sub in list(units_of(state, step)):
        if sub.status == WAITING_RETRY and sub.fire_at is not None and sub.fire_at <= now_ms:
            outputs += budgets.begin(state, unit, sub.attempt + 1, now_ms, env.budgets)
    return outputs


def _turn(state: RunState, step: StepSpec, answer: object, env: Env, now_ms: int) -> list[Emitted]:
    loop = agent_of(state, step.name)
    text = json.dumps(answer)
    fact = RunEvent(
        event_id=ev.event_id(state.run_id, ev.MODEL_CALLED, step.name, 1, "held", turn_name(loop.turn)),
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        step=step.name,
        event=ev.MODEL_CALLED,
        ts=ev.at_ms(now_ms),
        attempt=loop.model.attempt,
        source="executor",
        call=turn_name(loop.turn),
        output_json=text,
    )
    return agent.on_turn(state, step, fact, env, now_ms).outputs
