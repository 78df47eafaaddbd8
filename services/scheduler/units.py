"""Units of work the scheduler issues, retries and times out: a plain step, or a sub-step of an agent step
(its model turn, one of its tool calls). Each has a StepState of its own, and all are judged by the same
rules (services/scheduler/outcomes.py): a tool call of an agent follows exactly the tool step's rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from keel import events as ev
from keel.contracts import ApprovalGrant, StepCommand
from keel.pricing import usd_to_micros
from keel.workflows import RetryPolicy, StepSpec
from services.scheduler.state import DISPATCHED, AgentState, RunState, StepState


@dataclass(frozen=True, slots=True)
class Unit:
    step: str
    kind: str  # the command's kind: "llm", "tool" or "agent" (a model turn); only "tool" has effects
    retry: RetryPolicy
    timeout_ms: int
    tool: str | None = None  # name@version, for tool units
    call: str | None = None  # the agent sub-step (turn-N, turn-N.call-I); None for a plain step
    agent_id: str | None = None
    # An answer that breaks the step's declared output schema (after the executor asked the model once
    # more) is held for a human rather than failing the run: llm steps with an output_schema.
    hold_invalid: bool = False
    # A tool call of an agent to a read-only tool (its definition's side_effects: false) has no effect to
    # duplicate: a lost or unknown outcome is simply read again.
    writes: bool = True
    model: str | None = None  # the model a model call asks (for its reservation)
    budget_micros: int | None = None  # the step's budget envelope (docs/budgets.md)
    cheaper_model: str | None = None  # a model call's cheaper route when its budget would be crossed
    # The step's declared fallbacks (docs/quarantine.md): instead of being quarantined / failing the run,
    # the step falls back to this step. Plain steps only (an agent step declares none).
    on_quarantine: str | None = None
    on_failure: str | None = None

    @classmethod
    def of(cls, spec: StepSpec) -> Unit:
        hold = spec.kind == "llm" and spec.output_schema is not None
        return cls(
            spec.name,
            spec.kind,
            spec.retry,
            spec.timeout_ms,
            spec.tool,
            None,
            spec.agent,
            hold,
            model=spec.model,
            budget_micros=_micros(spec.budget_usd),
            cheaper_model=spec.budget_fallback_model,
            on_quarantine=spec.on_quarantine.fallback if spec.on_quarantine else None,
            on_failure=spec.on_failure.fallback if spec.on_failure else None,
        )

    @property
    def effects(self) -> bool:
        """Whether an attempt of this unit may have had an effect in the world (a call to a tool that
        writes; a plain tool step always counts as one)."""
        return self.kind == "tool" and self.writes

    @property
    def label(self) -> str:
        return self.step if self.call is None else f"{self.step} {self.call}"


def _micros(usd: float | None) -> int | None:
    return None if usd is None else usd_to_micros(usd)


def turn_unit(spec: StepSpec, turn: int) -> Unit:
    return Unit(
        spec.name,
        "agent",
        spec.retry,
        spec.timeout_ms,
        None,
        f"turn-{turn}",
        spec.agent,
        model=spec.model,
        budget_micros=_micros(spec.budget_usd),
        cheaper_model=spec.budget_fallback_model,
    )


def call_unit(spec: StepSpec, call: str, tool: str, writes: bool = True) -> Unit:
    return Unit(
        spec.name,
        "tool",
        spec.retry,
        spec.timeout_ms,
        tool,
        call,
        spec.agent,
        writes=writes,
        budget_micros=_micros(spec.budget_usd),
    )


def agent_of(state: RunState, step: str) -> AgentState:
    agent = state.steps[step].agent
    if agent is None:
        raise ValueError(f"step {step} has no agent loop")
    return agent


def unit_state(state: RunState, unit: Unit) -> StepState:
    step = state.steps[unit.step]
    if unit.call is None:
        return step
    found = agent_of(state, unit.step).units().get(unit.call)
    if found is None:
        raise ValueError(f"step {unit.step} has no sub-step {unit.call} in its current turn")
    return found


def units_of(state: RunState, spec: StepSpec) -> Iterator[tuple[Unit, StepState]]:
    """The units of a step that can be waiting or in flight: the step itself, or an agent's sub-steps."""
    step = state.steps[spec.name]
    if step.agent is None:
        yield Unit.of(spec), step
        return
    for call, sub in step.agent.units().items():
        meta = step.agent.meta.get(call, {})
        if "tool" in meta:
            unit = call_unit(spec, call, meta["tool"], meta.get("writes", True))
        else:
            unit = turn_unit(spec, step.agent.turn)
        yield unit, sub


def command(state: RunState, unit: Unit, attempt: int, now_ms: int) -> StepCommand:
    """Mark the unit's attempt as issued, with its deadline, and return its command. The input and key
    are the ones kept in its state: every attempt carries exactly them."""
    sub = unit_state(state, unit)
    sub.status, sub.attempt, sub.fire_at = DISPATCHED, attempt, None
    sub.deadline = now_ms + unit.timeout_ms
    path = unit.step if unit.call is None else f"{unit.step}/{unit.call}"
    if sub.input_json is None:
        raise ValueError(f"{unit.label}: issued without a rendered input")
    return StepCommand(
        command_id=f"{state.run_id}/{path}/{attempt}",
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        task_id=state.task_id,
        step=unit.step,
        kind=unit.kind,
        attempt=attempt,
        input_json=sub.input_json,
        idempotency_key=sub.idempotency_key,
        issued_at=ev.at_ms(now_ms),
        deadline=ev.at_ms(sub.deadline),  # the executor and adapters drop an attempt past it
        trace_id=state.trace_id,
        call=unit.call,
        agent_id=unit.agent_id if unit.call is not None else None,
        approval=_grant(sub),
    )


def _grant(sub: StepState) -> ApprovalGrant | None:
    """The human approval the attempt carries: only an approval of exactly the input and key it sends (an
    edited input after it has a new key, and no approval)."""
    approval = sub.approval
    if approval is None or approval.get("decision") != "approve":
        return None
    if approval.get("key") != sub.idempotency_key:
        return None
    return ApprovalGrant(
        case_id=approval["case_id"],
        input_ref=approval["input_ref"],
        idempotency_key=approval["key"],
        approved_by=approval.get("decided_by") or "unknown",
    )
