"""The scheduler's pure core: `decide(state, message, now) -> (state, outputs)` for one run.

Messages are run requests, facts from the other services, control commands and timer ticks; outputs
are facts (RunEvent) and step commands. No I/O: the same inputs always give the same outputs, so a
recorded stream can be replayed through it in tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from keel import events as ev
from keel.contracts import (
    ControlCommand,
    QuarantineDetail,
    RetryDetail,
    RunDetail,
    RunEvent,
    RunRequested,
    StepCommand,
)
from keel.idempotency import canonical_json, idempotency_key
from keel.workflows import (
    InvalidInput,
    StepSpec,
    TemplateError,
    WorkflowSpec,
    build_context,
    ready_steps,
    render,
    render_text,
    validate_input,
)
from services.scheduler.retry import decide_retry
from services.scheduler.state import (
    COMMITTED,
    DISPATCHED,
    QUARANTINED,
    RUN_FAILED,
    RUNNING,
    TERMINAL,
    WAITING_RETRY,
    RunState,
    StepState,
)

Emitted = RunEvent | StepCommand


class Workflows(Protocol):
    def get(self, name: str, version: int | None = None) -> WorkflowSpec: ...


# Inline run inputs travel in every event that copies them; larger ones belong in the blob store.
MAX_INPUT_BYTES = 256 * 1024

# The idempotency mode ("provider_key", "lookup", "none") an adapter declares, by tool ("email@1").
ToolModes = Callable[[str], "str | None"]


class Rejected(Exception):  # noqa: N818 - a verdict on a message
    """The message cannot start a run (unknown workflow, invalid input): it belongs in dead letters."""

    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self.reason, self.error_class = reason, error_class


@dataclass
class Decision:
    state: RunState | None
    outputs: list[Emitted]


def _event(
    state: RunState,
    kind: str,
    now_ms: int,
    step: str | None = None,
    attempt: int = 0,
    extra: str = "",
    **fields: Any,
) -> RunEvent:
    return RunEvent(
        event_id=ev.event_id(state.run_id, kind, step, attempt, extra),
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
        **fields,
    )


def start_run(req: RunRequested, partition: int, now_ms: int, workflows: Workflows) -> Decision:
    try:
        spec = workflows.get(req.workflow, req.workflow_version)
    except LookupError as exc:
        raise Rejected(str(exc), "unknown_workflow") from None
    size = len((req.input_json or "").encode())
    if size > MAX_INPUT_BYTES:
        raise Rejected(
            f"run input is {size} bytes; at most {MAX_INPUT_BYTES} may be inlined "
            "(store larger inputs in the blob store and pass input_ref)",
            "oversized",
        )
    try:
        run_input = json.loads(req.input_json or "{}")
        if not isinstance(run_input, dict):
            raise InvalidInput(spec.name, ["the run input must be a JSON object"])
        validate_input(spec, run_input)
    except (ValueError, InvalidInput) as exc:
        raise Rejected(f"{exc} (workflow version {spec.version})", "invalid_input") from None
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
    )
    input_json, input_ref = ev.inline(run_input)
    outputs: list[Emitted] = [
        _event(
            state,
            ev.CREATED,
            now_ms,
            input_json=input_json,
            input_ref=input_ref,
            run=RunDetail(status="created", requested_by=req.requested_by),
        ),
        _event(state, ev.SCHEDULED, now_ms, run=RunDetail(status="scheduled")),
        _event(state, ev.STARTED, now_ms, run=RunDetail(status="running")),
    ]
    outputs += _dispatch_ready(state, spec, now_ms)
    return Decision(state, outputs)


def decide(
    state: RunState | None, message: Any, partition: int, now_ms: int, workflows: Workflows
) -> Decision:
    if isinstance(message, RunRequested):
        if state is not None:  # a repeated run_id is a no-op, never a second run
            return Decision(state, [])
        return start_run(message, partition, now_ms, workflows)
    if state is None or state.status in TERMINAL:
        return Decision(state, [])
    spec = workflows.get(state.workflow, state.workflow_version)
    if isinstance(message, RunEvent):
        return _on_fact(state, message, spec, now_ms)
    if isinstance(message, ControlCommand) and message.action == "cancel":
        state.status = ev.CANCELED
        return Decision(
            state,
            [
                _event(
                    state,
                    ev.CANCELED,
                    now_ms,
                    error=message.reason,
                    run=RunDetail(status="canceled", reason=message.reason),
                )
            ],
        )
    return Decision(state, [])


def due(state: RunState, now_ms: int, workflows: Workflows, tool_mode: ToolModes) -> Decision:
    """Fire the run's timers that are due: retry backoffs, and deadlines of attempts that never reported."""
    if state.status != RUNNING:
        return Decision(state, [])
    spec = workflows.get(state.workflow, state.workflow_version)
    outputs: list[Emitted] = []
    for name, step in state.steps.items():
        if state.status != RUNNING:
            break
        if step.status == WAITING_RETRY and step.fire_at is not None and step.fire_at <= now_ms:
            outputs += _issue(state, spec.step(name), step.attempt + 1, now_ms)
        elif step.status == DISPATCHED and step.deadline is not None and step.deadline <= now_ms:
            outputs += _on_timeout(state, spec.step(name), now_ms, tool_mode).outputs
    return Decision(state, outputs)


def next_timer(state: RunState) -> int | None:
    if state.status != RUNNING:
        return None
    times = [s.fire_at for s in state.steps.values() if s.status == WAITING_RETRY and s.fire_at is not None]
    times += [s.deadline for s in state.steps.values() if s.status == DISPATCHED and s.deadline is not None]
    return min(times) if times else None


def _on_timeout(state: RunState, spec: StepSpec, now_ms: int, tool_mode: ToolModes) -> Decision:
    # The attempt never reported back: its worker died or stalled mid-call. For a tool the call may have
    # reached the provider, so the outcome is unknown; an llm step has no side effect to repeat.
    attempt = state.steps[spec.name].attempt
    if spec.kind == "llm":
        failure_class, mode = "transient", None
    else:
        failure_class, mode = "unknown_outcome", tool_mode(spec.tool or "")
    error = f"attempt {attempt} timed out after {spec.timeout_ms} ms without a result"
    return _retry_or_stop(state, spec, failure_class, mode, None, error, None, now_ms)


def _on_fact(state: RunState, fact: RunEvent, spec: WorkflowSpec, now_ms: int) -> Decision:
    step = state.steps.get(fact.step or "")
    if step is None or fact.source == "scheduler":
        return Decision(state, [])
    if fact.event == ev.STEP_COMMITTED and step.status != COMMITTED:
        step.status, step.fire_at, step.deadline = COMMITTED, None, None
        step.output = json.loads(fact.output_json) if fact.output_json else None
        step.external_id = fact.commit.external_id if fact.commit else None
        if state.status != RUNNING:
            return Decision(state, [])
        if len(state.committed()) == len(state.steps):
            state.status = ev.COMPLETED
            out_json, out_ref = ev.inline(state.outputs())
            return Decision(
                state,
                [
                    _event(
                        state,
                        ev.COMPLETED,
                        now_ms,
                        output_json=out_json,
                        output_ref=out_ref,
                        run=RunDetail(status="completed"),
                    )
                ],
            )
        return Decision(state, _dispatch_ready(state, spec, now_ms))
    if (
        fact.event in (ev.TOOL_FAILED, ev.STEP_FAILED)
        and step.status == DISPATCHED
        and fact.attempt == step.attempt
    ):
        return _on_failure(state, spec.step(fact.step or ""), fact, now_ms)
    return Decision(state, [])


def _on_failure(state: RunState, spec: StepSpec, fact: RunEvent, now_ms: int) -> Decision:
    tool = fact.tool
    failure_class = (
        (tool.failure_class if tool else None)
        or (fact.step_detail.failure_class if fact.step_detail else None)
        or "transient"
    )
    return _retry_or_stop(
        state,
        spec,
        failure_class,
        tool.idempotency_mode if tool else None,
        tool.retry_after_ms if tool else None,
        fact.error,
        fact.idempotency_key,
        now_ms,
    )


def _retry_or_stop(
    state: RunState,
    spec: StepSpec,
    failure_class: str,
    mode: str | None,
    retry_after_ms: int | None,
    error: str | None,
    key: str | None,
    now_ms: int,
) -> Decision:
    step = state.steps[spec.name]
    decision = decide_retry(
        spec.retry,
        failure_class,
        step.attempt,
        idempotency_mode=mode,
        retry_after_ms=retry_after_ms,
        seed=f"{state.run_id}|{spec.name}|{step.attempt}",
    )
    if decision.action == "retry":
        step.status, step.fire_at, step.deadline = WAITING_RETRY, now_ms + decision.delay_ms, None
        return Decision(
            state,
            [
                _event(
                    state,
                    ev.RETRY_SCHEDULED,
                    now_ms,
                    spec.name,
                    step.attempt,
                    idempotency_key=key,
                    error=error,
                    retry=RetryDetail(
                        failure_class=failure_class,
                        reason=decision.reason,
                        delay_ms=decision.delay_ms,
                        fire_at=ev.at_ms(step.fire_at),
                        next_attempt=step.attempt + 1,
                    ),
                )
            ],
        )
    if decision.action == "quarantine":
        state.status = QUARANTINED
        step.deadline = None
        case = f"{state.run_id}:{spec.name}:{step.attempt}"
        return Decision(
            state,
            [
                _event(
                    state,
                    ev.QUARANTINED,
                    now_ms,
                    spec.name,
                    step.attempt,
                    idempotency_key=key,
                    error=error,
                    quarantine=QuarantineDetail(
                        case_id=case, reason=decision.reason, failure_class=failure_class
                    ),
                )
            ],
        )
    return _fail(
        state, now_ms, f"step {spec.name} attempt {step.attempt}: {decision.reason}: {error}", spec.name
    )


def _fail(state: RunState, now_ms: int, reason: str, step: str | None = None) -> Decision:
    state.status = RUN_FAILED
    if step:
        state.steps[step].status = "failed"
    return Decision(
        state, [_event(state, ev.FAILED, now_ms, error=reason, run=RunDetail(status="failed", reason=reason))]
    )


def _dispatch_ready(state: RunState, spec: WorkflowSpec, now_ms: int) -> list[Emitted]:
    outputs: list[Emitted] = []
    for name in ready_steps(spec, state.committed(), state.started()):
        outputs += _issue(state, spec.step(name), 1, now_ms)
        if state.status != RUNNING:
            break
    return outputs


def _issue(state: RunState, spec: StepSpec, attempt: int, now_ms: int) -> list[Emitted]:
    """The command for one attempt. Its input is rendered from committed outputs only, so every attempt
    of a step renders the same payload and so carries the same idempotency key."""
    context = build_context(state.input, state.outputs())
    try:
        if spec.kind == "llm":
            payload: dict[str, Any] = {
                "model": spec.model,
                "prompt": render_text(spec.prompt or "", context),
                "response_format": spec.response_format,
                "agent": spec.agent,
            }
            key = None
        else:
            tool_payload = render(spec.input, context)
            payload = {"tool": spec.tool, "payload": tool_payload}
            key = idempotency_key(state.tenant_id, state.workflow, state.run_id, spec.name, tool_payload)
    except (TemplateError, ValueError) as exc:
        return _fail(state, now_ms, f"step {spec.name}: cannot render its input: {exc}", spec.name).outputs
    step = state.steps[spec.name]
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
            input_json=canonical_json(payload),
            idempotency_key=key,
            issued_at=ev.at_ms(now_ms),
            deadline=ev.at_ms(step.deadline),
            trace_id=state.trace_id,
        )
    ]
