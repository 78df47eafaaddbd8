"""Issuing step attempts: which steps are ready, and the command of one attempt."""

from __future__ import annotations

from typing import Any

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
from services.scheduler import agent, budgets
from services.scheduler.env import Env
from services.scheduler.state import RUNNING, RunState
from services.scheduler.units import Unit
from services.scheduler.verdicts import Emitted, fail


def dispatch_ready(state: RunState, spec: WorkflowSpec, now_ms: int, env: Env) -> list[Emitted]:
    outputs: list[Emitted] = []
    for name in ready_steps(spec, state.committed(), state.started()):
        outputs += issue(state, spec.step(name), 1, now_ms, env)
        if state.status != RUNNING:
            break
    return outputs


def _render(state: RunState, spec: StepSpec) -> tuple[str, str | None]:
    """The command input and idempotency key of a step, rendered from the run input and committed
    outputs."""
    context = build_context(state.input, state.outputs())
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
    step starts its loop instead (services/scheduler/agent.py)."""
    if spec.kind == "agent":
        return agent.start(state, spec, env, now_ms)
    step = state.steps[spec.name]
    if step.input_json is None:
        try:
            step.input_json, step.idempotency_key = _render(state, spec)
            step.first_issued_at = now_ms
            # What an attempt may cost at most, fixed with its input (its retries reserve the same).
            if spec.kind == "llm":
                step.worst_micros = budgets.llm_worst(spec, step.input_json, env.routes, state.tenant_id)
            else:
                step.worst_micros = budgets.fee_worst(env.fee_of(spec.tool))
        except UnknownModelPrice as exc:  # its spend could not be counted: never called
            return fail(state, now_ms, f"step {spec.name}: {exc}", spec.name).outputs
        except (TemplateError, ValueError) as exc:
            return fail(state, now_ms, f"step {spec.name}: cannot render its input: {exc}", spec.name).outputs
    return budgets.begin(state, Unit.of(spec), attempt, now_ms, env.budgets)
