"""The executor's pure core: what one step command turns into, given the model's answer if any."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import keel.events as ev
from keel.breaker import Transition
from keel.contracts import CommitDetail, ModelDetail, RunEvent, StepCommand, StepDetail, ToolCommand
from keel.vocab import TRANSIENT, VALIDATION


def _event(cmd: StepCommand, kind: str, now_ms: int, extra: str = "", **fields: Any) -> RunEvent:
    return ev.step_fact(cmd, kind, now_ms, "executor", extra, **fields)


def step_started(cmd: StepCommand, now_ms: int) -> RunEvent:
    return _event(
        cmd,
        ev.STEP_STARTED,
        now_ms,
        input_json=cmd.input_json,
        input_ref=ev.inline(json.loads(cmd.input_json))[1],
        step_detail=StepDetail(kind=cmd.kind, deadline=cmd.deadline),
    )


def tool_command(cmd: StepCommand) -> ToolCommand:
    spec = json.loads(cmd.input_json)
    if cmd.idempotency_key is None:
        raise ValueError(f"tool step {cmd.step} has no idempotency key")
    return ToolCommand(
        command_id=cmd.command_id,
        run_id=cmd.run_id,
        tenant_id=cmd.tenant_id,
        workflow=cmd.workflow,
        workflow_version=cmd.workflow_version,
        task_id=cmd.task_id,
        step=cmd.step,
        attempt=cmd.attempt,
        tool=spec["tool"],
        payload_json=ev.inline(spec["payload"])[0],
        idempotency_key=cmd.idempotency_key,
        issued_at=cmd.issued_at,
        trace_id=cmd.trace_id,
        # The adapters never start a call the scheduler already counts as lost.
        deadline=cmd.deadline,
    )


@dataclass(frozen=True, slots=True)
class LlmSpec:
    """What an llm step command asks the model router for."""

    agent: str | None
    model: str
    prompt: str
    response_format: str


def llm_spec(cmd: StepCommand) -> LlmSpec:
    """The llm step's request; raises ValueError when the command is malformed."""
    try:
        spec = json.loads(cmd.input_json)
        model, prompt = spec["model"], spec["prompt"]
        if not isinstance(model, str) or not isinstance(prompt, str):
            raise ValueError("model and prompt must be strings")
        return LlmSpec(spec.get("agent"), model, prompt, spec.get("response_format") or "text")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed llm step command: {type(exc).__name__}: {exc}") from None


def deadline_ms(cmd: StepCommand) -> int | None:
    return None if cmd.deadline is None else int(cmd.deadline.timestamp() * 1000)


def too_late(cmd: StepCommand, agent: str | None, model: str, now_ms: int) -> list[RunEvent]:
    """The attempt's deadline passed before its model call could start: the call is not made (the
    scheduler already counts the attempt as lost and retries it); this fact says why nothing was spent."""
    error = "not called: the attempt's deadline passed before its model call could start"
    return llm_failed(cmd, agent, model, TRANSIENT, error, None, now_ms)


def llm_succeeded(
    cmd: StepCommand,
    agent: str | None,
    model: str,
    provider: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float,
    latency_ms: int,
    output: Any,
    now_ms: int,
) -> list[RunEvent]:
    """model_called, then step_committed: an llm step has no side effect, so its output is its commit."""
    out_json, out_ref = ev.inline(output)
    return [
        _event(
            cmd,
            ev.MODEL_CALLED,
            now_ms,
            agent_id=agent,
            model=model,
            cost_usd_est=cost_usd,
            output_json=out_json,
            output_ref=out_ref,
            model_call=ModelDetail(
                provider=provider,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_ms=latency_ms,
            ),
        ),
        _event(
            cmd,
            ev.STEP_COMMITTED,
            now_ms,
            agent_id=agent,
            output_json=out_json,
            output_ref=out_ref,
            commit=CommitDetail(committed_at=ev.at_ms(now_ms)),
        ),
    ]


def llm_failed(
    cmd: StepCommand,
    agent: str | None,
    model: str,
    failure_class: str,
    error: str,
    cost_usd: float | None,
    now_ms: int,
) -> list[RunEvent]:
    return [
        _event(
            cmd,
            ev.STEP_FAILED,
            now_ms,
            agent_id=agent,
            model=model,
            cost_usd_est=cost_usd,
            error=error,
            step_detail=StepDetail(kind="llm", failure_class=failure_class),
        )
    ]


def circuit_events(cmd: StepCommand, transitions: list[Transition], now_ms: int) -> list[RunEvent]:
    """Model-route circuit breaker state changes seen during this step's call."""
    return [_event(cmd, t.event_type, now_ms, extra=t.name, error=t.reason) for t in transitions]


def payload_missing(cmd: StepCommand, error: str, now_ms: int) -> list[RunEvent]:
    """The command's input travelled by reference and its blob is gone: nothing can be called, and
    retrying cannot bring it back, so the step fails with the reason (never runs on a null input)."""
    return [
        _event(
            cmd,
            ev.STEP_FAILED,
            now_ms,
            error=f"the step's input cannot be read: {error}",
            step_detail=StepDetail(kind=cmd.kind, failure_class=VALIDATION),
        )
    ]
