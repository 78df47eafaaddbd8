"""The model calls of one step attempt, run on a background worker after `step_started` has committed:
what each call (or, for an llm step whose answer broke its schema, the two calls) publishes."""

from __future__ import annotations

from typing import Any

import keel.events as ev
from keel.contracts import RunEvent, StepCommand
from keel.pricing import UnknownModelPrice
from keel.vocab import VALIDATION
from services.executor import core
from services.executor.router import ModelError, ModelRequest, ModelResponse, ModelRouter
from services.executor.specs import LlmSpec, TurnSpec, reask_messages, schema_violations

REASK = "reask"  # names the facts of an llm step's second call, beside the first's


def _ask(
    router: ModelRouter, cmd: StepCommand, agent: str | None, request: ModelRequest, extra: str = ""
) -> ModelResponse | list[RunEvent]:
    """The answer, or the facts of a call that gave none (the step fails with its class)."""
    if request.deadline_ms is not None and ev.now_ms() >= request.deadline_ms:
        return core.too_late(cmd, agent, request.model, ev.now_ms())
    try:
        return router.complete(request)
    except UnknownModelPrice as exc:  # its spend could not be counted: never called, never retried
        return core.llm_failed(cmd, agent, request.model, VALIDATION, str(exc), None, ev.now_ms())
    except ModelError as exc:
        failed = core.llm_failed(
            cmd,
            agent,
            request.model,
            exc.failure_class,
            exc.message,
            exc.cost_usd,
            ev.now_ms(),
            cost_micros=exc.cost_micros,
        )
        return failed + core.circuit_events(cmd, exc.transitions, ev.now_ms(), extra)


def turn_call(router: ModelRouter, cmd: StepCommand, spec: TurnSpec, request: ModelRequest) -> list[RunEvent]:
    """An agent's model turn: its model_called (the turn's commit point), or step_failed."""
    answer = _ask(router, cmd, spec.agent, request)
    if isinstance(answer, list):
        return answer
    events = core.turn_answered(cmd, spec.agent, answer, answer.message, ev.now_ms())
    return events + core.circuit_events(cmd, answer.transitions, ev.now_ms())


def llm_call(router: ModelRouter, cmd: StepCommand, spec: LlmSpec, request: ModelRequest) -> list[RunEvent]:
    """An llm step: model_called and step_committed, or step_failed. With an output schema, an answer that
    breaks it is asked for once more, in this attempt, with the violations; a second wrong answer fails
    the attempt as `validation` with the answer as evidence."""
    answer = _ask(router, cmd, spec.agent, request)
    if isinstance(answer, list):
        return answer
    circuit = core.circuit_events(cmd, answer.transitions, ev.now_ms())
    output = _output(request, answer)
    violations = [] if spec.output_schema is None else schema_violations(spec.output_schema, output)
    if not violations:
        return core.llm_succeeded(cmd, spec.agent, answer, output, ev.now_ms()) + circuit
    first = [core.model_called(cmd, spec.agent, answer, output, ev.now_ms()), *circuit]
    messages = reask_messages(spec.prompt, answer.content, violations)
    again = request.model_copy(update={"messages": messages})
    second = _ask(router, cmd, spec.agent, again, REASK)
    if isinstance(second, list):
        return first + second
    output = _output(again, second)
    asked = {"model": again.model, "messages": messages}
    called = core.model_called(cmd, spec.agent, second, output, ev.now_ms(), REASK, asked)
    circuit = core.circuit_events(cmd, second.transitions, ev.now_ms(), REASK)
    assert spec.output_schema is not None  # only a schema's violations lead here
    violations = schema_violations(spec.output_schema, output)
    if violations:
        refused = core.schema_refused(cmd, spec.agent, second.model, violations, output, ev.now_ms())
        return [*first, called, *circuit, *refused]
    return [*first, called, *circuit, core.llm_committed(cmd, spec.agent, output, ev.now_ms())]


def _output(request: ModelRequest, answer: ModelResponse) -> Any:
    return answer.parsed if request.response_format == "json" else {"text": answer.content}
