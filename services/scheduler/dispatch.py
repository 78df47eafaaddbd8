"""Issuing step attempts: which steps are ready, and the command of one attempt."""

from __future__ import annotations

from typing import Any

from keel import events as ev
from keel.contracts import StepCommand
from keel.idempotency import canonical_json, idempotency_key
from keel.workflows import (
    StepSpec,
    TemplateError,
    WorkflowSpec,
    build_context,
    ready_steps,
    render,
    render_text,
)
from services.scheduler.state import DISPATCHED, RUNNING, RunState
from services.scheduler.verdicts import Emitted, fail


def dispatch_ready(state: RunState, spec: WorkflowSpec, now_ms: int) -> list[Emitted]:
    outputs: list[Emitted] = []
    for name in ready_steps(spec, state.committed(), state.started()):
        outputs += issue(state, spec.step(name), 1, now_ms)
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
            "response_format": spec.response_format,
            "agent": spec.agent,
        }
        return canonical_json(payload), None
    tool_payload = render(spec.input, context)
    key = idempotency_key(state.tenant_id, state.workflow, state.run_id, spec.name, tool_payload)
    return canonical_json({"tool": spec.tool, "payload": tool_payload}), key


def issue(state: RunState, spec: StepSpec, attempt: int, now_ms: int) -> list[Emitted]:
    """The command for one attempt. The input and key are rendered once, for the step's first attempt,
    and kept in its state: every later attempt carries exactly them, whatever the templating code does
    meanwhile (an upgrade between two attempts must not change the key of an effect under way)."""
    step = state.steps[spec.name]
    if step.input_json is None:
        try:
            step.input_json, step.idempotency_key = _render(state, spec)
            step.first_issued_at = now_ms
        except (TemplateError, ValueError) as exc:
            return fail(state, now_ms, f"step {spec.name}: cannot render its input: {exc}", spec.name).outputs
    step.status, step.attempt, step.fire_at = DISPATCHED, attempt, None
    step.deadline = now_ms + spec.timeout_ms
    return [
        StepCommand(
            command_id=f"{state.run_id}/{spec.name}/{attempt}",
            run_id=state.run_id,
            tenant_id=state.tenant_id,
            workflow=state.workflow,
            workflow_version=state.workflow_version,
            task_id=state.task_id,
            step=spec.name,
            kind=spec.kind,
            attempt=attempt,
            input_json=step.input_json,
            idempotency_key=step.idempotency_key,
            issued_at=ev.at_ms(now_ms),
            deadline=ev.at_ms(step.deadline),  # the executor and adapters drop an attempt past it
            trace_id=state.trace_id,
        )
    ]
