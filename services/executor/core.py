"""The executor's pure core: what one step command turns into, given the model's answer if any."""

from __future__ import annotations

import json
from typing import Any, Protocol

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
        # An agent's tool call: its sub-step (turn-N.call-I) and agent go on every fact the call makes.
        call=cmd.call,
        agent_id=cmd.agent_id,
        # A human's approval of this exact call: the adapters check it against the payload and key.
        approval=cmd.approval,
    )


def deadline_ms(cmd: StepCommand) -> int | None:
    return None if cmd.deadline is None else int(cmd.deadline.timestamp() * 1000)


class Answered(Protocol):
    """One model call's answer, as the router gives it (services/executor/router.ModelResponse)."""

    @property
    def model(self) -> str: ...  # the model that answered: a fallback, if the requested one failed
    @property
    def provider(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def cost_micros(self) -> int: ...  # exact, from the tokens (keel.pricing.cost_micros)
    @property
    def route_reason(self) -> str: ...  # why this model answered (route class, tenant's models, fallbacks)
    @property
    def cached_tokens(self) -> int: ...  # of the prompt tokens, served from the provider's cache
    @property
    def latency_ms(self) -> int: ...


def too_late(cmd: StepCommand, agent: str | None, model: str, now_ms: int) -> list[RunEvent]:
    """The attempt's deadline passed before its model call could start: the call is not made (the
    scheduler already counts the attempt as lost and retries it); this fact says why nothing was spent."""
    error = "not called: the attempt's deadline passed before its model call could start"
    return llm_failed(cmd, agent, model, TRANSIENT, error, None, now_ms)


def model_called(
    cmd: StepCommand,
    agent: str | None,
    answer: Answered,
    output: Any,
    now_ms: int,
    extra: str = "",
    request: Any = None,
) -> RunEvent:
    """One model call: who answered, its tokens, cost and latency, and what it said. What it was asked is
    `input_ref`: the command's input (in full on the attempt's step_started), or `request` when the call
    asked something else (a re-ask), then carried here in full."""
    out_json, out_ref = ev.inline(output)
    in_json, in_ref = ev.inline(request) if request is not None else (None, _ref_of(cmd.input_json))
    return _event(
        cmd,
        ev.MODEL_CALLED,
        now_ms,
        extra,
        agent_id=agent,
        model=answer.model,
        cost_usd_est=answer.cost_usd,
        cost_micros=answer.cost_micros,
        input_json=in_json,
        input_ref=in_ref,
        output_json=out_json,
        output_ref=out_ref,
        model_call=ModelDetail(
            provider=answer.provider,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_ms=answer.latency_ms,
            route_reason=answer.route_reason or None,
            route_class=_route_class(cmd),
            cached_tokens=answer.cached_tokens or None,
        ),
    )


def _ref_of(input_json: str) -> str | None:
    try:
        return ev.content_ref_of_json(input_json)
    except ValueError:
        return None


def llm_committed(cmd: StepCommand, agent: str | None, output: Any, now_ms: int) -> RunEvent:
    """An llm step has no side effect, so its (valid) output is its commit."""
    out_json, out_ref = ev.inline(output)
    return _event(
        cmd,
        ev.STEP_COMMITTED,
        now_ms,
        agent_id=agent,
        output_json=out_json,
        output_ref=out_ref,
        commit=CommitDetail(committed_at=ev.at_ms(now_ms)),
    )


def llm_succeeded(
    cmd: StepCommand, agent: str | None, answer: Answered, output: Any, now_ms: int
) -> list[RunEvent]:
    """model_called, then step_committed."""
    return [model_called(cmd, agent, answer, output, now_ms), llm_committed(cmd, agent, output, now_ms)]


def turn_answered(
    cmd: StepCommand, agent: str | None, answer: Answered, message: Any, now_ms: int
) -> list[RunEvent]:
    """An agent's model turn: model_called alone, with the assistant's message (text and tool calls) as
    its output. It is the turn's commit point; the step commits later, with the agent's final answer."""
    return [model_called(cmd, agent, answer, message, now_ms)]


def llm_failed(
    cmd: StepCommand,
    agent: str | None,
    model: str,
    failure_class: str,
    error: str,
    cost_usd: float | None,
    now_ms: int,
    output: Any = None,
    cost_micros: int | None = None,
) -> list[RunEvent]:
    """The attempt failed (an agent turn's too: its call names the turn). `cost_usd` and `cost_micros`
    are spend no model_called carries (an answer paid for but unusable); `output` the answer that failed,
    kept as evidence."""
    out_json, out_ref = ev.inline(output) if output is not None else (None, None)
    return [
        _event(
            cmd,
            ev.STEP_FAILED,
            now_ms,
            agent_id=agent,
            model=model,
            cost_usd_est=cost_usd,
            cost_micros=cost_micros,
            error=error,
            output_json=out_json,
            output_ref=out_ref,
            step_detail=StepDetail(kind=cmd.kind, failure_class=failure_class),
        )
    ]


def schema_refused(
    cmd: StepCommand, agent: str | None, model: str, violations: list[str], answer: Any, now_ms: int
) -> list[RunEvent]:
    """The answer broke the step's output schema even when asked again: a `validation` failure naming
    each break by JSON path, with the answer as evidence (the step is held, never run on). Its calls'
    costs are on their model_called facts already."""
    error = "the answer does not match the step's output schema: " + "; ".join(violations)
    return llm_failed(cmd, agent, model, VALIDATION, error, None, now_ms, answer)


def circuit_events(
    cmd: StepCommand, transitions: list[Transition], now_ms: int, extra: str = ""
) -> list[RunEvent]:
    """Model-route circuit breaker state changes seen during this step's call (`extra` tells the facts
    of a second call of one attempt from the first's)."""
    return [
        _event(cmd, t.event_type, now_ms, extra=f"{extra}:{t.name}" if extra else t.name, error=t.reason)
        for t in transitions
    ]


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


def _route_class(cmd: StepCommand) -> str | None:
    """The route class the step's command asked for, if any (its input is JSON from the scheduler)."""
    try:
        value = json.loads(cmd.input_json).get("route_class")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
