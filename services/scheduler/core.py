"""The scheduler's pure core: `decide(state, message, now) -> (state, outputs)` for one run.

Messages are run requests, facts from the other services, control commands and timer ticks; outputs
are facts (RunEvent) and step commands. No I/O: the same inputs always give the same outputs, so a
recorded stream can be replayed through it in tests.

Facts that arrive late are kept: a step_committed commits its step whatever attempt it names and
whatever the step is doing (its timer is dropped); on a run that has already ended (failed after its
attempts timed out, or canceled) it is recorded in the run's state and nothing else happens, so the
state still says which effects exist. A cancel never cuts a call short: see `_on_cancel`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from keel import events as ev
from keel import provenance
from keel.contracts import ControlCommand, RunDetail, RunEvent, RunRequested
from keel.intake import MAX_INLINE_INPUT_BYTES
from keel.routing import RouteConfig
from keel.vocab import CREATED, SCHEDULED, UNKNOWN_OUTCOME
from keel.workflows import StepSpec, WorkflowSpec
from services.scheduler import agent, approvals, budgets, cancel, control, dispatch, pause, rerun
from services.scheduler.admission import Rejected, admit, check_fields
from services.scheduler.budgets import BudgetPolicy
from services.scheduler.dispatch import dispatch_ready, issue
from services.scheduler.env import Env, ToolLookup
from services.scheduler.outcomes import (
    DEFAULT_TOOL_CLIENT_TIMEOUT_MS,
    KeyRetention,
    ToolModes,
    no_retention,
    on_failure,
    on_timeout,
)
from services.scheduler.state import (
    AWAITING_APPROVAL,
    CANCELING,
    COMMITTED,
    DISPATCHED,
    PAUSED,
    RESERVING,
    RUNNING,
    TERMINAL,
    WAITING_RETRY,
    RunState,
    StepState,
)
from services.scheduler.units import Unit, units_of
from services.scheduler.verdicts import Decision, Emitted, event

__all__ = [
    "DEFAULT_TOOL_CLIENT_TIMEOUT_MS",
    "MAX_INPUT_BYTES",
    "Decision",
    "Emitted",
    "Rejected",
    "BudgetPolicy",
    "Env",
    "ToolLookup",
    "ToolModes",
    "Workflows",
    "decide",
    "due",
    "next_timer",
    "start_run",
]


class Workflows(Protocol):
    def get(self, name: str, version: int | None = None) -> WorkflowSpec: ...


# Inline run inputs travel in every event that copies them; larger ones belong in the blob store.
MAX_INPUT_BYTES = MAX_INLINE_INPUT_BYTES

_TimerFilter = Callable[[StepState], bool]


def start_run(
    req: RunRequested, partition: int, now_ms: int, workflows: Workflows, env: Env | None = None
) -> Decision:
    """A new run, or Rejected (-> dead letter with the reason) before anything is issued or spent."""
    check_fields(req)
    try:
        spec = workflows.get(req.workflow, req.workflow_version)
    except LookupError as exc:
        raise Rejected(str(exc), "unknown_workflow") from None
    run_input = admit(req, spec)
    state = RunState(
        run_id=req.run_id,
        tenant_id=req.tenant_id,
        workflow=spec.name,
        workflow_version=spec.version,
        partition=partition,
        input=run_input,
        task_id=req.task_id,
        trace_id=req.trace_id,
        requested_by=req.requested_by,
        steps={s.name: StepState() for s in spec.steps},
        budget_micros=_run_limit(spec.budget_usd, req.budget_usd),
    )
    if rerun.is_rerun(req):  # the origin's steps before from_step: committed now, never issued
        rerun.prepare(req, spec, state)
    input_json, input_ref = ev.inline(run_input)
    outputs: list[Emitted] = [
        event(
            state,
            ev.CREATED,
            now_ms,
            input_json=input_json,
            input_ref=input_ref,
            run=RunDetail(status=CREATED, requested_by=req.requested_by, rerun_of=state.rerun_of),
        ),
        event(state, ev.SCHEDULED, now_ms, run=RunDetail(status=SCHEDULED)),
        event(state, ev.STARTED, now_ms, run=RunDetail(status=RUNNING)),
        *rerun.reused_facts(state, now_ms),
    ]
    outputs += dispatch_ready(state, spec, now_ms, env or Env())
    return Decision(state, outputs)


def _run_limit(workflow_usd: float | None, requested_usd: float | None) -> int | None:
    """The run's hard limit: the workflow's, lowered (never raised) by the request's."""
    limits = [u for u in (workflow_usd, requested_usd) if u is not None]
    return budgets.limit_micros(min(limits)) if limits else None


def decide(
    state: RunState | None,
    message: Any,
    partition: int,
    now_ms: int,
    workflows: Workflows,
    *,
    key_retention: KeyRetention = no_retention,
    tools: ToolLookup | None = None,
    budget_policy: BudgetPolicy | None = None,
    routes: RouteConfig | None = None,
) -> Decision:
    """`tools` gives agent steps their tools' definitions (name@version -> ToolDefinition); with a
    `budget_policy`, paid attempts reserve their worst case first (docs/budgets.md)."""
    _check_tenant(state, message)
    env = Env(tools, budget_policy, routes)
    # Every cost on the log is spent, and every ended attempt closed, whatever the run is doing.
    spent: list[Emitted] = []
    if budget_policy is not None and isinstance(message, RunEvent):
        spent += budgets.followups(message, now_ms)
    before = state.status if state is not None else None
    decision = _decide(state, message, partition, now_ms, workflows, key_retention, env)
    decision = _start_fallbacks(decision, workflows, now_ms, env)
    return _with_budgets(decision, before, spent, env, now_ms)


def _check_tenant(state: RunState | None, message: Any) -> None:
    """A request, fact or control command of another tenant than the run's never touches it."""
    tenant = getattr(message, "tenant_id", None)
    if state is None or tenant is None:
        return
    what = type(message).__name__
    problem = provenance.run_problem(state.tenant_id, tenant, what, state.run_id)
    if problem:
        raise Rejected(problem, provenance.TENANT_MISMATCH)


def _with_budgets(
    decision: Decision, before: str | None, spent: list[Emitted], env: Env, now_ms: int
) -> Decision:
    """A run that has just ended gives its run and step scopes back to the enforcer."""
    after = decision.state
    tail: list[Emitted] = []
    if env.budgets is not None and after is not None and after.status in TERMINAL and before not in TERMINAL:
        tail.append(budgets.forget(after, now_ms))
    if not spent and not tail:
        return decision
    return Decision(decision.state, spent + decision.outputs + tail)


def _decide(
    state: RunState | None,
    message: Any,
    partition: int,
    now_ms: int,
    workflows: Workflows,
    key_retention: KeyRetention,
    env: Env,
) -> Decision:
    if isinstance(message, RunRequested):
        if state is not None:  # a repeated run_id is a no-op, never a second run
            return Decision(state, [])
        return start_run(message, partition, now_ms, workflows, env)
    if state is None:
        return Decision(state, [])
    if isinstance(message, ControlCommand):  # on an ended run too: a decision on it is refused with a fact
        spec = workflows.get(state.workflow, state.workflow_version)
        return control.on_command(state, message, spec, now_ms, env)
    if state.status in TERMINAL:
        # A commit that arrives after the run ended (failed by timeouts, canceled) is still a fact about
        # an effect that exists: it is recorded in the run's state, and nothing else happens.
        if isinstance(message, RunEvent) and message.event == ev.STEP_COMMITTED:
            if message.call is None:
                _record_commit(state, message)
            elif message.step in state.steps:
                spec = workflows.get(state.workflow, state.workflow_version)
                agent.record_call(state, spec.step(message.step or ""), message)
        return Decision(state, [])
    if isinstance(message, RunEvent):
        spec = workflows.get(state.workflow, state.workflow_version)
        if message.source == "budget":
            return _on_budget(state, message, spec, now_ms, env)
        if message.call is not None:
            return _on_agent_fact(state, message, spec, now_ms, key_retention, env)
        return _on_fact(state, message, spec, now_ms, key_retention, env)
    return Decision(state, [])


def _on_budget(state: RunState, fact: RunEvent, spec: WorkflowSpec, now_ms: int, env: Env) -> Decision:
    """The enforcer's answer to a reservation (a warning or a lapse changes nothing here)."""
    if fact.event not in budgets.BUDGET_REPLIES or fact.step not in state.steps or state.status != RUNNING:
        if fact.event == budgets.RESERVED:  # nothing waits for it any more: give it back
            return Decision(state, [budgets.close(fact, now_ms)])
        return Decision(state, [])
    found = [(u, s) for u, s in units_of(state, spec.step(fact.step or "")) if u.call == fact.call]
    if not found:
        return Decision(state, [budgets.close(fact, now_ms)] if fact.event == budgets.RESERVED else [])
    unit, _ = found[0]
    return budgets.on_reply(state, unit, fact, now_ms, env.budgets)


def due(
    state: RunState,
    now_ms: int,
    workflows: Workflows,
    tool_mode: ToolModes,
    *,
    tool_timeout_ms: int = DEFAULT_TOOL_CLIENT_TIMEOUT_MS,
    key_retention: KeyRetention = no_retention,
    tools: ToolLookup | None = None,
    budget_policy: BudgetPolicy | None = None,
    routes: RouteConfig | None = None,
) -> Decision:
    """Fire the run's timers that are due: retry backoffs, deferred reservations, and deadlines of
    attempts that never reported (of steps, and of agent steps' model turns and tool calls).

    `tool_timeout_ms` is the adapters' HTTP client timeout: a tool attempt that timed out here may still
    be mid-call there, so its retry waits until that call must have ended."""
    if state.status not in (RUNNING, CANCELING):
        return Decision(state, [])
    env = Env(tools, budget_policy, routes)
    before = state.status
    decision = _due(state, now_ms, workflows, tool_mode, tool_timeout_ms, key_retention, env)
    decision = _start_fallbacks(decision, workflows, now_ms, env)
    return _with_budgets(decision, before, [], env, now_ms)


def _start_fallbacks(decision: Decision, workflows: Workflows, now_ms: int, env: Env) -> Decision:
    """A fallback chosen where the workflow was not at hand (outcomes) starts here."""
    state = decision.state
    if state is None or not any(getattr(o, "event", None) == ev.FALLBACK_CHOSEN for o in decision.outputs):
        return decision
    return dispatch.after_fallback(
        decision, workflows.get(state.workflow, state.workflow_version), now_ms, env
    )


def _due(
    state: RunState,
    now_ms: int,
    workflows: Workflows,
    tool_mode: ToolModes,
    tool_timeout_ms: int,
    key_retention: KeyRetention,
    env: Env,
) -> Decision:
    spec = workflows.get(state.workflow, state.workflow_version)
    outputs: list[Emitted] = []
    for name in list(state.steps):
        for unit, sub in list(units_of(state, spec.step(name))):
            if state.status not in (RUNNING, CANCELING):
                return Decision(state, outputs)
            fires = sub.fire_at is not None and sub.fire_at <= now_ms
            if sub.status == WAITING_RETRY and fires:
                if state.status == CANCELING and sub.last_failure == UNKNOWN_OUTCOME:
                    outputs += cancel.settle_again(state, unit, now_ms)
                elif state.status == RUNNING and unit.call is not None:
                    outputs += budgets.begin(state, unit, sub.attempt + 1, now_ms, env.budgets)
                elif state.status == RUNNING:
                    outputs += issue(state, spec.step(name), sub.attempt + 1, now_ms, env)
            elif sub.status == AWAITING_APPROVAL and fires and state.status == RUNNING:
                outputs += approvals.expire(state, spec, name, now_ms, env)
            elif sub.status == RESERVING and fires and state.status == RUNNING and env.budgets is not None:
                outputs += budgets.ask_again(state, unit, now_ms, env.budgets)
            elif sub.status == DISPATCHED and sub.deadline is not None and sub.deadline <= now_ms:
                if env.budgets is not None:
                    outputs += budgets.timed_out(state, unit, sub, now_ms)
                if state.status == CANCELING:
                    outputs += cancel.timed_out_while_canceling(state, unit, now_ms).outputs
                else:
                    lost = on_timeout(state, unit, now_ms, tool_mode, tool_timeout_ms, key_retention)
                    outputs += lost.outputs
    return Decision(state, outputs)


def next_timer(state: RunState) -> int | None:
    if state.status not in (RUNNING, CANCELING):
        return None
    subs = state.all_units()
    waiting = (WAITING_RETRY, RESERVING, AWAITING_APPROVAL)
    times = [s.fire_at for s in subs if s.status in waiting and s.fire_at is not None]
    times += [s.deadline for s in subs if s.status == DISPATCHED and s.deadline is not None]
    return min(times) if times else None


def _record_commit(state: RunState, fact: RunEvent) -> bool:
    """Commit the step a step_committed names, whatever attempt it names and whatever the step was doing
    (waiting to retry, or a newer attempt in flight): its timer goes with it. False if nothing changed."""
    step = state.steps.get(fact.step or "")
    if step is None or fact.source == "scheduler" or step.status == COMMITTED:
        return False
    step.status, step.fire_at, step.deadline = COMMITTED, None, None
    step.output = json.loads(fact.output_json) if fact.output_json else None
    step.external_id = fact.commit.external_id if fact.commit else None
    return True


def _on_fact(
    state: RunState,
    fact: RunEvent,
    spec: WorkflowSpec,
    now_ms: int,
    key_retention: KeyRetention,
    env: Env,
) -> Decision:
    step = state.steps.get(fact.step or "")
    if step is None or fact.source == "scheduler" or step.agent is not None:
        return Decision(state, [])  # an agent step's facts name their sub-step (see _on_agent_fact)
    if fact.event == ev.STEP_COMMITTED:
        if not _record_commit(state, fact):
            return Decision(state, [])
        if state.status == CANCELING:
            return cancel.settle_cancel(state, now_ms)
        if state.status != RUNNING:  # quarantined: recorded for whoever resolves the case
            return Decision(state, [])
        return Decision(state, _after_commit(state, spec, now_ms, env))
    if (
        fact.event in (ev.TOOL_FAILED, ev.STEP_FAILED)
        and step.status == DISPATCHED
        and fact.attempt == step.attempt
    ):
        unit = Unit.of(spec.step(fact.step or ""))
        if state.status == CANCELING:
            return cancel.failed_while_canceling(state, unit, fact, now_ms, key_retention)
        if state.status in (RUNNING, PAUSED):  # paused: its retry timer is set, and fires after the resume
            return on_failure(state, unit, fact, now_ms, key_retention)
    return Decision(state, [])


def _after_commit(state: RunState, spec: WorkflowSpec, now_ms: int, env: Env) -> list[Emitted]:
    """A step committed: the run completes, or the steps it unblocked start (dispatch.advance)."""
    return dispatch.advance(state, spec, now_ms, env)


def _on_agent_fact(
    state: RunState,
    fact: RunEvent,
    spec: WorkflowSpec,
    now_ms: int,
    key_retention: KeyRetention,
    env: Env,
) -> Decision:
    """A fact about a sub-step of an agent step: a turn's model call, or one of its tool calls."""
    step = state.steps.get(fact.step or "")
    if step is None or step.agent is None or fact.source == "scheduler" or step.status == COMMITTED:
        return Decision(state, [])
    step_spec = spec.step(fact.step or "")
    if fact.event == ev.MODEL_CALLED:
        if state.status == PAUSED:  # acted on at the resume
            return pause.hold_turn(state, step_spec, fact)
        if state.status == RUNNING:
            decision = agent.on_turn(state, step_spec, fact, env, now_ms)
            return _agent_progress(decision, step_spec, spec, now_ms, env)
        if fact.call == f"turn-{step.agent.turn}":  # recorded: no call it asks for is made now
            step.agent.model.status, step.agent.model.deadline = COMMITTED, None
        return cancel.settle_cancel(state, now_ms) if state.status == CANCELING else Decision(state, [])
    if fact.event == ev.STEP_COMMITTED:
        if not agent.record_call(state, step_spec, fact):
            return Decision(state, [])
        if state.status == CANCELING:
            return cancel.settle_cancel(state, now_ms)
        if state.status != RUNNING:
            return Decision(state, [])
        return Decision(state, agent.after_call(state, step_spec, env, now_ms))
    sub = step.agent.units().get(fact.call or "")
    if (
        fact.event in (ev.TOOL_FAILED, ev.STEP_FAILED)
        and sub is not None
        and sub.status == DISPATCHED
        and fact.attempt == sub.attempt
    ):
        unit = next(u for u, s in units_of(state, step_spec) if u.call == fact.call)
        if state.status == CANCELING:
            return cancel.failed_while_canceling(state, unit, fact, now_ms, key_retention)
        if state.status in (RUNNING, PAUSED):  # paused: its retry timer is set, and fires after the resume
            return on_failure(state, unit, fact, now_ms, key_retention)
    return Decision(state, [])


def _agent_progress(
    decision: Decision, step: StepSpec, spec: WorkflowSpec, now_ms: int, env: Env
) -> Decision:
    """After a turn: when its answer committed the agent step, the run goes on as after any commit."""
    state = decision.state
    if state is None or state.status != RUNNING or state.steps[step.name].status != COMMITTED:
        return decision
    return Decision(state, decision.outputs + _after_commit(state, spec, now_ms, env))
