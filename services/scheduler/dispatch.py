"""Issuing step attempts: which steps are ready, the command of one attempt, and when a run is done."""

from __future__ import annotations

from typing import Any

from keel import events as ev
from keel.contracts import RunEvent
from keel.idempotency import canonical_json, idempotency_key
from keel.pricing import UnknownModelPrice
from keel.workflows import (
    StepSpec,
    TemplateError,
    WorkflowSpec,
    build_context,
    ready_steps,
    render,
    render_text,
)
from services.scheduler import agent, approvals, budgets, fallbacks, rerun
from services.scheduler.env import Env
from services.scheduler.state import PENDING, RUNNING, RunState
from services.scheduler.units import Unit
from services.scheduler.verdicts import Decision, Emitted, end, fail


def dispatch_ready(state: RunState, spec: WorkflowSpec, now_ms: int, env: Env) -> list[Emitted]:
    """Start every step whose needs are done (a step that fell back counts once its fallback has
    committed); a fallback-only step only once chosen."""
    outputs: list[Emitted] = []
    done = set(state.outputs())
    for name in ready_steps(spec, done, state.started(), fallbacks.chosen(state)):
        outputs += issue(state, spec.step(name), 1, now_ms, env)
        if state.status != RUNNING:
            break
    return outputs


def advance(state: RunState, spec: WorkflowSpec, now_ms: int, env: Env) -> list[Emitted]:
    """A step is done (committed, or fell back): the run completes when every step is committed, fell
    back to a committed fallback, or is a fallback-only step nobody chose (then SKIPPED); otherwise the
    steps it unblocked start."""
    if fallbacks.settled(state, spec):
        fallbacks.skip_unchosen(state, spec)
        out_json, out_ref = ev.inline(state.outputs())
        return end(state, ev.COMPLETED, now_ms, output_json=out_json, output_ref=out_ref).outputs
    return dispatch_ready(state, spec, now_ms, env)


def after_fallback(decision: Decision, spec: WorkflowSpec, now_ms: int, env: Env) -> Decision:
    """Start the fallbacks a decision chose (outcomes and verdicts choose them without the workflow at
    hand). Nothing to do, and nothing looked at, unless the decision emitted a fallback_chosen."""
    state = decision.state
    if state is None or state.status != RUNNING:
        return decision
    if not any(isinstance(o, RunEvent) and o.event == ev.FALLBACK_CHOSEN for o in decision.outputs):
        return decision
    if not any(state.steps[name].status == PENDING for name in fallbacks.chosen(state)):
        return decision
    more = dispatch_ready(state, spec, now_ms, env)
    return Decision(state, decision.outputs + more) if more else decision


def _render(state: RunState, spec: StepSpec) -> tuple[str, str | None]:
    """The command input and idempotency key of a step, rendered from the run input and committed
    outputs (an approval step's: the question its human is asked)."""
    context = build_context(state.input, state.outputs())
    if spec.kind == "approval":
        return canonical_json({"prompt": render_text(spec.prompt or "", context)}), None
    if spec.kind == "llm":
        payload: dict[str, Any] = {
            "model": spec.model,
            "prompt": render_text(spec.prompt or "", context),
            "response_format": "json" if spec.output_schema is not None else spec.response_format,
            "agent": spec.agent,
        }
        if spec.output_schema is not None:  # the executor asks once more with the violations, then fails
            payload["output_schema"] = spec.output_schema
        if spec.max_tokens is not None:
            payload["max_tokens"] = spec.max_tokens
        if spec.route_class is not None:
            payload["route_class"] = spec.route_class
        return canonical_json(payload), None
    tool_payload = render(spec.input, context)
    key = idempotency_key(state.tenant_id, state.workflow, state.run_id, spec.name, tool_payload)
    return canonical_json({"tool": spec.tool, "payload": tool_payload}), key


def issue(state: RunState, spec: StepSpec, attempt: int, now_ms: int, env: Env) -> list[Emitted]:
    """The command for one attempt. The input and key are rendered once, for the step's first attempt,
    and kept in its state: every later attempt carries exactly them, whatever the templating code does
    meanwhile (an upgrade between two attempts must not change the key of an effect under way). An agent
    step starts its loop instead (services/scheduler/agent.py). A step that waits for a human (an
    approval step, a tool step with requires_approval) opens its approval case instead of its first
    attempt, with exactly that input and key (services/scheduler/approvals.py)."""
    if spec.kind == "agent":
        return agent.start(state, spec, env, now_ms)
    step = state.steps[spec.name]
    if step.input_json is None:
        try:
            step.input_json, key = _render(state, spec)
            step.idempotency_key = rerun.key_for(state, spec.name, step.input_json, key)
            step.first_issued_at = now_ms
            # What an attempt may cost at most, fixed with its input (its retries reserve the same).
            if spec.kind == "llm":
                step.worst_micros = budgets.llm_worst(spec, step.input_json, env.routes, state.tenant_id)
            elif spec.kind == "tool":
                step.worst_micros = budgets.fee_worst(env.fee_of(spec.tool))
        except UnknownModelPrice as exc:  # its spend could not be counted: never called
            return _cannot_start(state, spec, now_ms, f"step {spec.name}: {exc}")
        except (TemplateError, ValueError) as exc:
            return _cannot_start(state, spec, now_ms, f"step {spec.name}: cannot render its input: {exc}")
    if spec.kind == "approval" or (_needs_approval(spec, env) and not approvals.released(step)):
        return approvals.request(state, spec, now_ms)  # an approval step never has an attempt
    return budgets.begin(state, Unit.of(spec), attempt, now_ms, env.budgets)


def _cannot_start(state: RunState, spec: StepSpec, now_ms: int, reason: str) -> list[Emitted]:
    to = spec.on_failure.fallback if spec.on_failure else None
    fell = fallbacks.degrade(state, spec.name, to, now_ms, because=reason, failure_class=None, error=reason)
    return fell.outputs if fell is not None else fail(state, now_ms, reason, spec.name).outputs


def _needs_approval(spec: StepSpec, env: Env) -> bool:
    """A tool step asks a human first when the workflow says so, or when its tool's definition does (an
    irreversible tool: the adapters refuse it without an approval bound to the exact call)."""
    if spec.kind != "tool":
        return False
    if spec.requires_approval:
        return True
    if spec.tool is None or env.tools is None:
        return False
    try:
        return env.tools(spec.tool).requires_approval
    except LookupError:
        return False
