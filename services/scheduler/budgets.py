"""Budgets on the scheduler's side (docs/budgets.md): a paid attempt starts only once the budget enforcer
has reserved its worst case; the run's cost facts become spends, its ended attempts closes.

Pure: commands out, never I/O. The enforcer owns every tenant's figures; the scheduler only asks, waits,
and stops the run when told the limit would be crossed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from keel import events as ev
from keel.contracts import BudgetCommand, RunEvent, StepDetail
from keel.idempotency import canonical_json
from keel.pricing import usd_to_micros, worst_case_micros
from keel.routing import RouteConfig, route_worst_case_micros
from keel.vocab import BUDGET
from keel.workflows import StepSpec
from services.scheduler.state import RESERVING, RUN_FAILED, RunState, StepState
from services.scheduler.units import Unit, command, unit_state
from services.scheduler.verdicts import Decision, Emitted, end

DEFAULT_MAX_TOKENS = 1024  # the executor's default per model call
# An llm step with an output schema may ask the model once more, with its first answer in the prompt: a
# token of that answer is bounded here by this many bytes.
ANSWER_BYTES_PER_TOKEN = 16
BUDGET_REPLIES = frozenset({"budget_reserved", "budget_deferred", "budget_exceeded"})
RESERVED, DEFERRED, EXCEEDED = "budget_reserved", "budget_deferred", "budget_exceeded"


@dataclass(frozen=True)
class BudgetPolicy:
    """How the scheduler takes part in budgets. `max_wait_ms`: how long an attempt may wait, in all, for
    other runs' reservations to make room before its run is hard-stopped; `slack_ms`: how long after its
    attempt's deadline a reservation lapses (the grant's own delay plus the tool client's timeout)."""

    max_wait_ms: int = 120_000
    slack_ms: int = 60_000


def reservation_id(run_id: str, step: str, call: str | None, attempt: int) -> str:
    return "/".join(p for p in (run_id, step, call, str(attempt)) if p)


def limit_micros(usd: float | None) -> int | None:
    return None if usd is None else usd_to_micros(usd)


# -- the worst case of an attempt -------------------------------------------------------------------


def _call_worst(
    spec: StepSpec, routes: RouteConfig | None, tenant: str, prompt_bytes: int, max_tokens: int
) -> int:
    """One model call's worst case over every model its route may end up on (a route class's models, the
    fallbacks): whichever answers, the reservation covers it."""
    if routes is None:
        return worst_case_micros(spec.model or "", prompt_bytes, max_tokens)
    try:
        route = routes.plan(spec.model or "", spec.route_class, tenant)
    except LookupError:  # no model the tenant may use: the executor refuses the call (auth), spends nothing
        return worst_case_micros(spec.model or "", prompt_bytes, max_tokens)
    return route_worst_case_micros(route, prompt_bytes, max_tokens)


def llm_worst(spec: StepSpec, input_json: str, routes: RouteConfig | None = None, tenant: str = "") -> int:
    """An llm step's worst case: its prompt's bytes bound its tokens; with an output schema the executor
    may ask once more with the first answer in the prompt."""
    request = json.loads(input_json)
    max_tokens = int(request.get("max_tokens") or DEFAULT_MAX_TOKENS)
    prompt = len(str(request.get("prompt", "")).encode())
    worst = _call_worst(spec, routes, tenant, prompt, max_tokens)
    if spec.output_schema is not None:
        reask = prompt * 2 + ANSWER_BYTES_PER_TOKEN * max_tokens
        worst += _call_worst(spec, routes, tenant, reask, max_tokens)
    return worst


def turn_worst(spec: StepSpec, input_json: str, routes: RouteConfig | None = None, tenant: str = "") -> int:
    """An agent turn's worst case: the whole request (messages and tool schemas) bounds its tokens."""
    max_tokens = spec.max_tokens or DEFAULT_MAX_TOKENS
    return _call_worst(spec, routes, tenant, len(input_json.encode()), max_tokens)


def fee_worst(fee_usd: float | None) -> int | None:
    return None if not fee_usd else usd_to_micros(fee_usd)


# -- starting an attempt ----------------------------------------------------------------------------


def begin(
    state: RunState, unit: Unit, attempt: int, now_ms: int, policy: BudgetPolicy | None
) -> list[Emitted]:
    """Issue the unit's attempt, or first reserve its worst case when it costs money."""
    sub = unit_state(state, unit)
    if policy is None or sub.worst_micros is None:
        return [command(state, unit, attempt, now_ms)]
    sub.status, sub.attempt, sub.fire_at, sub.deadline = RESERVING, attempt, None, None
    sub.reserve_since, sub.reserve_tries = now_ms, 0
    return [_reserve(state, unit, sub, now_ms, policy)]


def _reserve(state: RunState, unit: Unit, sub: StepState, now_ms: int, policy: BudgetPolicy) -> BudgetCommand:
    sub.reserve_tries += 1
    rid = reservation_id(state.run_id, unit.step, unit.call, sub.attempt)
    return _budget(
        "reserve",
        f"{rid}:reserve:{sub.reserve_tries}",
        state,
        now_ms,
        step=unit.step,
        call=unit.call,
        attempt=sub.attempt,
        agent_id=unit.agent_id,
        model=unit.model,
        reservation_id=rid,
        amount_micros=sub.worst_micros or 0,
        run_limit_micros=state.budget_micros,
        step_limit_micros=unit.budget_micros,
        expires_at=ev.at_ms(now_ms + unit.timeout_ms + policy.slack_ms),
    )


def ask_again(state: RunState, unit: Unit, now_ms: int, policy: BudgetPolicy) -> list[Emitted]:
    """A deferred reservation's timer fired: ask again, unless the attempt has waited too long."""
    sub = unit_state(state, unit)
    waited = now_ms - (sub.reserve_since or now_ms)
    if waited > policy.max_wait_ms:
        reason = (
            f"step {unit.label}: no budget freed up in {waited // 1000} s (other runs' reservations held it; "
            f"KEEL_BUDGET_MAX_WAIT_S {policy.max_wait_ms // 1000} s): hard stop"
        )
        return hard_stop(state, unit, reason, None, now_ms).outputs
    sub.fire_at = None
    return [_reserve(state, unit, sub, now_ms, policy)]


def on_reply(
    state: RunState, unit: Unit, fact: RunEvent, now_ms: int, policy: BudgetPolicy | None
) -> Decision:
    """The enforcer's answer to the unit's reservation."""
    sub = unit_state(state, unit)
    if sub.status != RESERVING or fact.attempt != sub.attempt:
        # An answer for an attempt no longer waiting (canceled, or a repeat): give a grant straight back.
        return Decision(state, [close(fact, now_ms)] if fact.event == RESERVED else [])
    if fact.event == RESERVED:
        return Decision(state, [command(state, unit, sub.attempt, now_ms)])
    if fact.event == DEFERRED:
        retry = fact.budget.retry_after_ms if fact.budget and fact.budget.retry_after_ms else 1000
        sub.fire_at = now_ms + max(int(retry), 100)
        return Decision(state, [])
    cheaper = _cheaper_route(state, unit, sub, fact, now_ms, policy)
    if cheaper is not None:
        return Decision(state, cheaper)
    budget = fact.budget
    figures = ""
    if budget is not None:
        figures = (
            f": {budget.scope} limit ${budget.limit_usd:.6f}, spent ${budget.spent_usd:.6f}, "
            f"this attempt's worst case ${budget.requested_usd or 0:.6f}"
        )
    scope = budget.scope if budget else "budget"
    reason = f"step {unit.label}: the {scope} limit would be crossed{figures}: hard stop"
    return hard_stop(state, unit, reason, fact, now_ms)


def _cheaper_route(
    state: RunState, unit: Unit, sub: StepState, fact: RunEvent, now_ms: int, policy: BudgetPolicy | None
) -> list[Emitted] | None:
    """The step declares a cheaper model for when its budget would be crossed: the attempt asks it instead
    (its own worst case reserved anew), with a fact that says why. None when there is no cheaper route
    (none declared, already taken, or the input travels by reference and cannot be rewritten here)."""
    if unit.cheaper_model is None or policy is None or sub.input_json is None:
        return None
    try:
        request = json.loads(sub.input_json)
    except ValueError:
        return None
    if not isinstance(request, dict) or "model" not in request or request["model"] == unit.cheaper_model:
        return None
    max_tokens = int(request.get("max_tokens") or DEFAULT_MAX_TOKENS)
    if unit.kind == "llm":
        prompt = len(str(request.get("prompt", "")).encode())
        calls = 2 if "output_schema" in request else 1
        worst = calls * worst_case_micros(
            unit.cheaper_model, prompt * calls + ANSWER_BYTES_PER_TOKEN * max_tokens, max_tokens
        )
    else:
        worst = worst_case_micros(unit.cheaper_model, len(sub.input_json.encode()), max_tokens)
    scope = fact.budget.scope if fact.budget else "budget"
    reason = (
        f"step {unit.label}: {request['model']}'s worst case would cross the {scope} limit: "
        f"taking the step's cheaper route, {unit.cheaper_model}"
    )
    request["model"] = unit.cheaper_model
    sub.input_json, sub.worst_micros = canonical_json(request), worst
    changed = RunEvent(
        event_id=ev.event_id(state.run_id, ev.ROUTE_CHANGED, unit.step, sub.attempt, "", unit.call),
        run_id=state.run_id,
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        step=unit.step,
        call=unit.call,
        agent_id=unit.agent_id,
        event=ev.ROUTE_CHANGED,
        ts=ev.at_ms(now_ms),
        attempt=sub.attempt,
        model=unit.cheaper_model,
        error=reason,
        source="scheduler",
        trace_id=state.trace_id,
        budget=fact.budget,
    )
    return [changed, _reserve(state, unit, sub, now_ms, policy)]


def hard_stop(state: RunState, unit: Unit, reason: str, fact: RunEvent | None, now_ms: int) -> Decision:
    unit_state(state, unit).status = RUN_FAILED
    state.steps[unit.step].status = RUN_FAILED
    detail = StepDetail(kind=unit.kind, failure_class=BUDGET)
    return end(state, RUN_FAILED, now_ms, reason, step_detail=detail, budget=fact.budget if fact else None)


# -- facts to spends and closes ----------------------------------------------------------------------


class _RunCoordinates(Protocol):
    """What every budget command copies from its run: a RunState and a RunEvent both have it."""

    @property
    def run_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def workflow_version(self) -> int | None: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def trace_id(self) -> str | None: ...


def _budget(action: str, command_id: str, run: _RunCoordinates, now_ms: int, **fields: Any) -> BudgetCommand:
    """One budget command of `run`, keyed (by the shell) by its tenant; `fields` name the unit."""
    fields.setdefault("reservation_id", run.run_id)
    return BudgetCommand(
        command_id=command_id,
        action=action,
        tenant_id=run.tenant_id,
        run_id=run.run_id,
        workflow=run.workflow,
        workflow_version=run.workflow_version,
        task_id=run.task_id,
        issued_at=ev.at_ms(now_ms),
        trace_id=run.trace_id,
        **fields,
    )


def _command(fact: RunEvent, action: str, now_ms: int, amount: int = 0) -> BudgetCommand:
    """A spend or close for the attempt a fact is about (its id follows from the fact's, so a replay of the
    fact gives the same command)."""
    return _budget(
        action,
        f"{fact.event_id}:{action}",
        fact,
        now_ms,
        step=fact.step,
        call=fact.call,
        attempt=fact.attempt,
        agent_id=fact.agent_id,
        model=fact.model,
        reservation_id=reservation_id(fact.run_id, fact.step or "", fact.call, fact.attempt),
        amount_micros=amount,
    )


def close(fact: RunEvent, now_ms: int) -> BudgetCommand:
    return _command(fact, "close", now_ms)


# The facts that end an attempt: after them nothing more can be spent under its reservation.
_ENDS = frozenset({ev.STEP_COMMITTED, ev.STEP_FAILED, ev.TOOL_FAILED})


def followups(fact: RunEvent, now_ms: int) -> list[BudgetCommand]:
    """A cost on the log is spent against its attempt's reservation; an attempt that ended closes it
    (a close for an attempt that reserved nothing is a no-op at the enforcer)."""
    if fact.source in ("scheduler", "budget") or fact.step is None:
        return []
    out: list[BudgetCommand] = []
    if fact.cost_micros:
        out.append(_command(fact, "spend", now_ms, fact.cost_micros))
    turn_answer = fact.event == ev.MODEL_CALLED and fact.call is not None
    if fact.event in _ENDS or turn_answer:
        out.append(close(fact, now_ms))
    return out


def forget(state: RunState, now_ms: int) -> BudgetCommand:
    return _budget("forget", f"{state.run_id}:forget", state, now_ms)


def timed_out(state: RunState, unit: Unit, sub: StepState, now_ms: int) -> list[BudgetCommand]:
    """An attempt lost to its deadline: nothing more can be spent under it (no call starts after the
    deadline), so its reservation is closed."""
    if sub.worst_micros is None:
        return []
    rid = reservation_id(state.run_id, unit.step, unit.call, sub.attempt)
    unit_fields = {"step": unit.step, "call": unit.call, "attempt": sub.attempt, "agent_id": unit.agent_id}
    return [_budget("close", f"{rid}:timeout:close", state, now_ms, reservation_id=rid, **unit_fields)]
