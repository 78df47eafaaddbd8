"""The executor's shell around a scripted model router: an agent's model turns, llm steps whose answer
must meet a JSON Schema (asked once more, then refused), and an agent's tool calls tagged with their
sub-step all the way to the provider. Driven as the loop drives it: handle, commit, tick."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from helpers import wait_for

import keel.events as ev
from keel.background import BackgroundCalls
from keel.contracts import RunEvent, StepCommand, ToolCommand
from keel.toolrun.processor import ToolProcessor
from keel.toolrun.result import ToolRequest, ToolResult
from keel.txloop import Output, Record, Reject
from services.executor.router import ModelError, ModelRequest, ModelResponse, ModelRouter, RouterSettings
from services.executor.service import ExecutorProcessor

pytestmark = pytest.mark.timeout(30)

Script = list[dict[str, Any] | ModelError]


class ScriptedRouter(ModelRouter):
    """Answers each call with the next message of its script (or raises the next error); keeps requests."""

    def __init__(self, script: Script) -> None:
        super().__init__(RouterSettings(), httpx.Client())
        self.script, self.calls = list(script), list[ModelRequest]()

    def complete(self, req: ModelRequest) -> ModelResponse:
        self.calls.append(req)
        step = self.script.pop(0)
        if isinstance(step, ModelError):
            raise step
        content = step.get("content")
        parsed = json.loads(content) if req.response_format == "json" and content else None
        return ModelResponse(
            content=content,
            parsed=parsed,
            message={"role": "assistant", **step},
            model=req.model,
            provider="fake",
            prompt_tokens=30,
            completion_tokens=10,
            cost_usd=0.002,
            cost_micros=2000,
            latency_ms=12,
        )


TOOLS = [{"type": "function", "function": {"name": "lookup_customer", "parameters": {"type": "object"}}}]
ANSWER_SCHEMA = {"type": "object", "required": ["reply"], "properties": {"reply": {"type": "string"}}}
TURN = {
    "model": "sim-medium",
    "agent": "support_triage_v1",
    "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Ticket 7: refund order 42."},
    ],
    "tools": TOOLS,
    "response_format": ANSWER_SCHEMA,
    "max_tokens": 300,
}
CALL = {"id": "c1", "type": "function", "function": {"name": "lookup_customer", "arguments": "{}"}}
SOON = datetime.now(UTC) + timedelta(minutes=10)


def command(
    kind: str, body: dict[str, Any], call: str | None = None, deadline: datetime = SOON
) -> StepCommand:
    return StepCommand(
        command_id=f"r/triage/1/{call}",
        run_id="r",
        tenant_id="acme",
        workflow="support",
        workflow_version=1,
        step="triage",
        kind=kind,
        attempt=1,
        input_json=json.dumps(body),
        issued_at=datetime.now(UTC),
        deadline=deadline,
        call=call,
        agent_id="support_triage_v1" if kind == "agent" else None,
    )


def run(script: Script, cmd: StepCommand) -> tuple[list[RunEvent], list[RunEvent], ScriptedRouter]:
    """(facts of the batch, facts of its model calls after the commit, the router)."""
    router = ScriptedRouter(script)
    executor = ExecutorProcessor(router, BackgroundCalls(1))
    handled = executor.handle(Record("keel.step-commands", 0, 3, cmd.run_id, cmd, 0))
    assert router.calls == []  # nothing is asked before step_started (and the offset) commit
    executor.on_commit()
    wait_for(lambda: executor.calls.pending() == 0, 5, "the model calls to finish")
    return events(handled), events(executor.tick(0)), router


def events(outputs: Sequence[object]) -> list[RunEvent]:
    return [o.value for o in outputs if isinstance(o, Output) and isinstance(o.value, RunEvent)]


def test_an_agent_turn_commits_as_model_called_with_the_assistant_message() -> None:
    cmd = command("agent", TURN, "turn-2")
    message = {"content": None, "tool_calls": [CALL]}
    batch, after, router = run([message], cmd)
    assert [e.event for e in batch] == ["step_started"] and batch[0].call == "turn-2"
    [called] = after  # no step_committed: the turn's commit point is this fact, the step goes on
    assert called.event == "model_called" and called.event_id == "r:triage:turn-2:1:model_called"
    assert (called.call, called.agent_id, called.model, called.cost_usd_est) == (
        "turn-2",
        "support_triage_v1",
        "sim-medium",
        0.002,
    )
    assert called.model_call is not None and called.model_call.provider == "fake"
    assert (called.model_call.prompt_tokens, called.model_call.completion_tokens) == (30, 10)
    assert called.model_call.latency_ms == 12
    assert called.input_ref == ev.content_ref_of_json(cmd.input_json) == batch[0].input_ref
    assert called.output_json is not None
    assert json.loads(called.output_json) == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert called.output_ref == ev.content_ref_of_json(called.output_json)
    [req] = router.calls
    assert req.messages == TURN["messages"] and req.tools == TOOLS
    assert req.response_format == ANSWER_SCHEMA and req.max_tokens == 300
    assert req.deadline_ms == int(SOON.timestamp() * 1000)
    assert req.metadata == {
        "keel_tenant": "acme",
        "keel_run": "r",
        "keel_step": "triage",
        "keel_call": "turn-2",
    }


def test_a_failed_turn_fails_with_its_class_and_names_the_turn() -> None:
    _, after, _ = run([ModelError("rate_limited", "sim-medium: HTTP 429")], command("agent", TURN, "turn-1"))
    [failed] = after
    assert (
        failed.event == "step_failed" and failed.call == "turn-1" and failed.agent_id == "support_triage_v1"
    )
    assert failed.step_detail is not None
    assert (failed.step_detail.kind, failed.step_detail.failure_class) == ("agent", "rate_limited")
    assert failed.event_id == "r:triage:turn-1:1:step_failed"


def test_a_turn_past_its_deadline_is_not_asked() -> None:
    late = datetime.now(UTC) - timedelta(milliseconds=1)
    _, after, router = run([{"content": "never"}], command("agent", TURN, "turn-3", late))
    assert router.calls == [] and [e.event for e in after] == ["step_failed"]
    assert after[0].step_detail is not None and after[0].step_detail.failure_class == "transient"


@pytest.mark.parametrize(
    "body, call",
    [
        (TURN, None),  # a turn must say which turn it is
        ({**TURN, "messages": []}, "turn-1"),
        ({**TURN, "tools": "lookup_customer"}, "turn-1"),
        ({**TURN, "response_format": {"type": "no-such-type"}}, "turn-1"),
        ({**TURN, "max_tokens": 0}, "turn-1"),
        ({k: v for k, v in TURN.items() if k != "model"}, "turn-1"),
    ],
)
def test_a_malformed_turn_is_rejected_before_anything_is_called(
    body: dict[str, Any], call: str | None
) -> None:
    router = ScriptedRouter([])
    with pytest.raises(Reject):
        ExecutorProcessor(router, BackgroundCalls(1)).handle(
            Record("keel.step-commands", 0, 3, "r", command("agent", body, call), 0)
        )


LLM = {"model": "sim-small", "prompt": "Reply to the ticket as JSON.", "output_schema": ANSWER_SCHEMA}
BAD = '{"reply": null}'


def test_an_llm_answer_that_breaks_its_schema_is_asked_once_more() -> None:
    _, after, router = run([{"content": BAD}, {"content": '{"reply": "Refunded."}'}], command("llm", LLM))
    assert [e.event for e in after] == ["model_called", "model_called", "step_committed"]
    first, second, committed = after
    assert len({e.event_id for e in after}) == 3 and second.event_id == "r:triage:1:model_called:reask"
    assert first.output_json == '{"reply":null}' and first.cost_usd_est == second.cost_usd_est == 0.002
    assert committed.output_json == '{"reply":"Refunded."}' and committed.cost_usd_est is None
    one, two = router.calls
    assert one.response_format == two.response_format == "json"  # a schema implies a JSON answer
    assert two.messages == [
        {"role": "user", "content": "Reply to the ticket as JSON."},
        {"role": "assistant", "content": BAD},
        {
            "role": "user",
            "content": "Your answer does not match the required JSON Schema: "
            "$.reply: None is not of type 'string'. Answer again with only the corrected JSON object.",
        },
    ]
    # What the model was asked again is on the fact, so the timeline shows it.
    assert second.input_json is not None and json.loads(second.input_json)["messages"] == two.messages


def test_a_second_wrong_answer_fails_the_step_as_validation_with_the_evidence() -> None:
    _, after, router = run([{"content": BAD}, {"content": '{"answer": 1}'}], command("llm", LLM))
    assert [e.event for e in after] == ["model_called", "model_called", "step_failed"]
    failed = after[-1]
    assert failed.step_detail is not None and failed.step_detail.failure_class == "validation"
    assert failed.error is not None and "$: 'reply' is a required property" in failed.error
    assert failed.output_json == '{"answer":1}'  # the answer that broke it, for the quarantine case
    assert failed.cost_usd_est is None  # both calls' costs are on their model_called facts already
    assert len(router.calls) == 2  # asked once more, never a third time


def test_a_failed_reask_fails_with_its_own_class() -> None:
    _, after, _ = run([{"content": BAD}, ModelError("transient", "sim-small: HTTP 503")], command("llm", LLM))
    assert [e.event for e in after] == ["model_called", "step_failed"]
    assert after[-1].step_detail is not None and after[-1].step_detail.failure_class == "transient"


def test_an_llm_answer_that_meets_its_schema_is_committed_at_once() -> None:
    _, after, router = run([{"content": '{"reply": "ok"}'}], command("llm", LLM))
    assert [e.event for e in after] == ["model_called", "step_committed"] and len(router.calls) == 1


def test_an_llm_step_without_a_schema_is_never_asked_twice() -> None:
    plain = {"model": "sim-small", "prompt": "Reply.", "response_format": "json"}
    _, after, router = run([{"content": BAD}], command("llm", plain))
    assert [e.event for e in after] == ["model_called", "step_committed"] and len(router.calls) == 1
    assert router.calls[0].metadata == {"keel_tenant": "acme", "keel_run": "r", "keel_step": "triage"}


class RecordingInvoker:
    """A tool that records the requests it gets and succeeds."""

    name, idempotency_mode = "lookup_customer", "lookup"

    def __init__(self) -> None:
        self.requests: list[ToolRequest] = []

    def invoke(self, request: ToolRequest) -> ToolResult:
        self.requests.append(request)
        return ToolResult(ok=True, external_id="cus_1", output={"id": "cus_1"})


def test_an_agents_tool_call_reaches_its_tool_tagged_with_its_sub_step() -> None:
    step = command("tool", {"tool": "lookup_customer@1", "payload": {"email": "a@b.c"}}, "turn-2.call-0")
    step = StepCommand(
        **{**step.to_dict(), "agent_id": "support_triage_v1", "idempotency_key": "acme|w|r|triage|k-1"}
    )
    executor = ExecutorProcessor(ScriptedRouter([]), BackgroundCalls(1))
    tool_cmd = executor.handle(Record("keel.step-commands", 0, 3, "r", step, 0))[1].value
    assert isinstance(tool_cmd, ToolCommand)
    assert (tool_cmd.call, tool_cmd.agent_id) == ("turn-2.call-0", "support_triage_v1")
    invoker = RecordingInvoker()
    tools = ToolProcessor({}, lambda _: invoker, calls=BackgroundCalls(1))  # type: ignore[arg-type]
    [called] = events(tools.handle(Record("keel.tool-commands", 0, 5, "r", tool_cmd, 0)))
    assert called.call == "turn-2.call-0" and called.agent_id == "support_triage_v1"
    tools.on_commit()
    wait_for(lambda: tools.calls.pending() == 0, 5, "the tool call to finish")
    assert [e.call for e in events(tools.tick(0))] == ["turn-2.call-0"]
    [request] = invoker.requests
    assert request.effect.metadata() == {
        "keel_tenant": "acme",
        "keel_run": "r",
        "keel_step": "triage",
        "keel_call": "turn-2.call-0",
    }


@pytest.mark.parametrize(
    "body",
    [
        {**LLM, "output_schema": {"type": "no-such-type"}},  # a schema nothing could be checked against
        {**LLM, "output_schema": None, "response_format": ANSWER_SCHEMA},  # llm steps ask json or text
        {**LLM, "max_tokens": -1},
    ],
)
def test_a_malformed_llm_command_is_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(Reject):
        ExecutorProcessor(ScriptedRouter([]), BackgroundCalls(1)).handle(
            Record("keel.step-commands", 0, 3, "r", command("llm", body), 0)
        )


def test_an_llm_steps_max_tokens_is_sent() -> None:
    _, _, router = run([{"content": '{"reply": "ok"}'}], command("llm", {**LLM, "max_tokens": 64}))
    assert router.calls[0].max_tokens == 64
