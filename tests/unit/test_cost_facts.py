"""Every fact with a cost carries it in integer micro-dollars, computed from the tokens (llm steps, their
re-asks, agent turns, answers paid for but unusable) or from a paid tool's fee (its tool_called).
The executor runs its real router against the model simulator; the tool runner a paid fake tool."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from helpers import wait_for

import keel.events as ev
from keel.background import BackgroundCalls
from keel.contracts import RunEvent, StepCommand, ToolCommand
from keel.pricing import cost_micros, usd_to_micros
from keel.toolrun.processor import ToolProcessor
from keel.toolrun.result import ToolRequest, ToolResult
from keel.txloop import Output, Record
from services.executor.router import ModelRequest, ModelRouter, RouterSettings
from services.executor.service import ExecutorProcessor

pytestmark = pytest.mark.timeout(30)

SOON = datetime.now(UTC) + timedelta(minutes=10)
TOOLS = [{"type": "function", "function": {"name": "lookup_customer", "parameters": {"type": "object"}}}]


@pytest.fixture
def executor(model_url: str) -> Iterator[ExecutorProcessor]:
    with httpx.Client(base_url=model_url, timeout=5.0) as control, httpx.Client(trust_env=False) as http:
        control.post("/_reset").raise_for_status()
        router = ModelRouter(RouterSettings(model_url=f"{model_url}/v1"), http)
        yield ExecutorProcessor(router, BackgroundCalls(1))


def command(kind: str, body: dict[str, Any], call: str | None = None) -> StepCommand:
    return StepCommand(
        command_id=f"r/s/1/{call}",
        run_id="r-cost",
        tenant_id="acme",
        workflow="support",
        workflow_version=1,
        task_id="ticket-7",
        step="s",
        kind=kind,
        attempt=1,
        input_json=json.dumps(body),
        issued_at=datetime.now(UTC),
        deadline=SOON,
        call=call,
        agent_id="triage_v1" if kind == "agent" else None,
    )


def events(outputs: Sequence[object]) -> list[RunEvent]:
    return [o.value for o in outputs if isinstance(o, Output) and isinstance(o.value, RunEvent)]


def run(executor: ExecutorProcessor, cmd: StepCommand) -> list[RunEvent]:
    executor.handle(Record("keel.step-commands", 0, 3, cmd.run_id, cmd, 0))
    executor.on_commit()
    wait_for(lambda: executor.calls.pending() == 0, 10, "the model calls to finish")
    return events(executor.tick(0))


def assert_costed(fact: RunEvent) -> None:
    """cost_micros is the exact cost of the fact's own tokens, and cost_usd_est says the same in USD."""
    assert fact.model is not None and fact.model_call is not None
    tokens = (fact.model_call.prompt_tokens, fact.model_call.completion_tokens)
    assert fact.cost_micros == cost_micros(fact.model, *tokens) > 0
    assert fact.cost_usd_est is not None and usd_to_micros(fact.cost_usd_est) == fact.cost_micros


def test_an_llm_steps_model_called_carries_its_cost_in_micros(executor: ExecutorProcessor) -> None:
    after = run(executor, command("llm", {"model": "sim-small", "prompt": "Write to Ada.", "agent": "w"}))
    assert [e.event for e in after] == ["model_called", "step_committed"]
    assert_costed(after[0])
    assert (after[0].tenant_id, after[0].workflow, after[0].run_id, after[0].step) == (
        "acme",
        "support",
        "r-cost",
        "s",
    )
    assert (after[0].agent_id, after[0].task_id) == ("w", "ticket-7")
    assert after[1].cost_micros is None  # the commit costs nothing: sums never count a call twice


def test_a_re_ask_carries_its_own_cost(executor: ExecutorProcessor) -> None:
    schema = {"type": "object", "required": ["reply"], "properties": {"reply": {"type": "string"}}}
    body = {"model": "sim-medium", "prompt": "Answer.", "output_schema": schema}
    after = run(executor, command("llm", body))
    assert [e.event for e in after] == ["model_called", "model_called", "step_failed"]
    first, second, failed = after
    assert_costed(first)
    assert_costed(second)
    assert first.event_id != second.event_id
    assert failed.cost_micros is None  # its calls' costs are on their model_called facts already


def test_an_agent_turn_carries_its_cost(executor: ExecutorProcessor) -> None:
    messages = [{"role": "user", "content": "Ticket 7: refund order 42."}]
    body = {"model": "sim-large", "messages": messages, "tools": TOOLS}
    [called] = run(executor, command("agent", body, "turn-1"))
    assert called.event == "model_called" and called.call == "turn-1" and called.agent_id == "triage_v1"
    assert_costed(called)


def test_an_answer_paid_for_but_unusable_carries_its_cost_on_step_failed(
    executor: ExecutorProcessor, model_url: str
) -> None:
    with httpx.Client(base_url=model_url, timeout=5.0) as control:
        control.post("/_faults", json={"kind": "null_field", "field": "choices.0.message.content"})
    after = run(executor, command("llm", {"model": "sim-small", "prompt": "x", "response_format": "json"}))
    [failed] = [e for e in after if e.event == "step_failed"]
    assert failed.cost_micros is not None and failed.cost_micros > 0
    assert failed.cost_usd_est is not None and usd_to_micros(failed.cost_usd_est) == failed.cost_micros


def test_cached_prompt_tokens_are_priced_as_cached() -> None:
    """A provider reporting cache reads (OpenAI's prompt_tokens_details): the fact's cost uses them."""

    def reply(request: httpx.Request) -> httpx.Response:
        body = {
            "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            "usage": {
                "prompt_tokens": 100_000,
                "completion_tokens": 1000,
                "prompt_tokens_details": {"cached_tokens": 80_000},
            },
        }
        return httpx.Response(200, json=body)

    router = ModelRouter(RouterSettings(), httpx.Client(transport=httpx.MockTransport(reply)))
    request = ModelRequest(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    answer = router.complete(request)
    assert answer.cached_tokens == 80_000
    assert answer.cost_micros == cost_micros("openai/gpt-4o-mini", 100_000, 1000, cached_tokens=80_000)
    assert answer.cost_micros < cost_micros("openai/gpt-4o-mini", 100_000, 1000)


class PaidTool:
    """A tool whose provider charges per call (its definition's fee_usd)."""

    name, idempotency_mode = "sms", "provider_key"

    def __init__(self, fee_usd: float | None) -> None:
        self.fee_usd = fee_usd

    def invoke(self, request: ToolRequest) -> ToolResult:
        return ToolResult(True, output={"id": "m1"}, external_id="m1", latency_ms=1)


def tool_command(call: str | None) -> ToolCommand:
    return ToolCommand(
        command_id="c1",
        run_id="r-tool",
        tenant_id="acme",
        workflow="support",
        workflow_version=1,
        task_id="ticket-7",
        step="triage",
        attempt=1,
        tool="sms@1",
        payload_json=json.dumps({"to": "+1"}),
        idempotency_key="acme|support|r-tool|triage|abc",
        issued_at=datetime.now(UTC),
        deadline=ev.at_ms(ev.now_ms() + 60_000),
        call=call,
        agent_id="triage_v1",
    )


@pytest.mark.parametrize(("fee", "micros"), [(0.0125, 12_500), (0.0000015, 2), (None, None)])
def test_a_paid_tools_fee_is_on_its_tool_called(fee: float | None, micros: int | None) -> None:
    processor = ToolProcessor({}, lambda tool: PaidTool(fee), calls=BackgroundCalls(1))  # type: ignore[arg-type]
    cmd = tool_command("turn-1.call-0")
    [called] = events(processor.handle(Record("keel.tool-commands", 0, 1, cmd.run_id, cmd, 0)))
    assert called.event == "tool_called"
    assert (called.cost_micros, called.cost_usd_est) == (micros, fee)
    assert (called.tenant_id, called.workflow, called.run_id, called.step, called.agent_id) == (
        "acme",
        "support",
        "r-tool",
        "triage",
        "triage_v1",
    )
    assert called.task_id == "ticket-7" and called.call == "turn-1.call-0"
    processor.on_commit()
    wait_for(lambda: processor.calls.pending() == 0, 5, "the call to finish")
    [succeeded] = events(processor.tick(0))
    assert succeeded.cost_micros is None  # the fee is counted once, on tool_called


def test_the_http_adapter_takes_the_fee_from_the_definition() -> None:
    from keel.tooldefs import ToolRegistry
    from services.adapters.config import AdapterSettings
    from services.adapters.http_tool import HttpToolAdapter
    from services.adapters.service import HttpInvoker

    tools = ToolRegistry.configured()
    definition = next(d for d in map(tools.get, tools.names()) if d.request is not None)
    paid = definition.model_copy(update={"fee_usd": 0.25})
    invoker = HttpInvoker(HttpToolAdapter(paid), AdapterSettings(), httpx.Client())
    assert invoker.fee_usd == 0.25


def test_model_called_says_why_this_route_was_taken(executor: ExecutorProcessor) -> None:
    body = {"model": "sim-small", "prompt": "Write to Ada.", "agent": "w", "route_class": "write"}
    after = run(executor, command("llm", body))
    detail = after[0].model_call
    assert detail is not None and detail.route_class == "write"
    # No route configured for the class here: the step's own model, and the reason says so.
    assert detail.route_reason and "route class 'write' is not configured" in detail.route_reason
