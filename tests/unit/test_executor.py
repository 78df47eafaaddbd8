"""The executor's shell around a fake model router: the call starts after step_started commits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from helpers import wait_for

from keel.background import BackgroundCalls
from keel.contracts import StepCommand
from keel.txloop import Record, Reject
from services.executor.router import ModelRequest, ModelResponse, ModelRouter, RouterSettings
from services.executor.service import ExecutorProcessor


class CountingRouter(ModelRouter):
    """A router whose model answers at once and counts the calls made."""

    def __init__(self) -> None:
        super().__init__(RouterSettings(), httpx.Client())
        self.calls: list[ModelRequest] = []

    def complete(self, req: ModelRequest) -> ModelResponse:
        self.calls.append(req)
        return ModelResponse(
            content="hi",
            parsed=None,
            model=req.model,
            provider="fake",
            prompt_tokens=3,
            completion_tokens=1,
            cost_usd=0.0001,
            cost_micros=100,
            latency_ms=1,
        )


def command(kind: str = "llm", deadline: datetime | None = None, **spec: object) -> StepCommand:
    body = spec or {"model": "sim-small", "prompt": "Hello", "response_format": "text"}
    return StepCommand(
        command_id="r/s/1",
        run_id="r",
        tenant_id="acme",
        workflow="w",
        workflow_version=1,
        step="s",
        kind=kind,
        attempt=1,
        input_json=json.dumps(body),
        idempotency_key="acme|w|run-1|s|k" if kind == "tool" else None,
        issued_at=datetime.now(UTC),
        deadline=deadline,
    )


def record(cmd: StepCommand) -> Record:
    return Record("keel.step-commands", 0, 7, cmd.run_id, cmd, 0)


def finished(executor: ExecutorProcessor) -> list[str]:
    wait_for(lambda: executor.calls.pending() == 0, 5, "the model call to finish")
    return [o.value.event for o in executor.tick(0)]  # type: ignore[union-attr]


@pytest.fixture
def executor() -> ExecutorProcessor:
    return ExecutorProcessor(CountingRouter(), BackgroundCalls(2))


def test_an_llm_step_is_recorded_as_started_before_its_model_is_called(executor: ExecutorProcessor) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)
    outputs = executor.handle(record(command(deadline=soon)))
    assert [o.value.event for o in outputs] == ["step_started"]  # type: ignore[union-attr]
    assert executor.router.calls == []  # type: ignore[attr-defined]
    executor.on_commit()  # step_started and the command's offset are durable: now the call is made
    assert finished(executor) == ["model_called", "step_committed"]
    [req] = executor.router.calls  # type: ignore[attr-defined]
    assert req.deadline_ms == int(soon.timestamp() * 1000)  # the call never waits past the deadline


def test_a_call_staged_in_an_aborted_batch_is_never_made(executor: ExecutorProcessor) -> None:
    executor.handle(record(command()))
    executor.on_abort()
    executor.on_commit()
    assert finished(executor) == [] and executor.router.calls == []  # type: ignore[attr-defined]


def test_a_call_whose_deadline_has_passed_is_not_made(executor: ExecutorProcessor) -> None:
    executor.handle(record(command(deadline=datetime.now(UTC) - timedelta(milliseconds=1))))
    executor.on_commit()
    assert finished(executor) == ["step_failed"]
    assert executor.router.calls == []  # type: ignore[attr-defined]


def test_a_tool_command_carries_the_attempts_deadline(executor: ExecutorProcessor) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)
    cmd = command("tool", soon, tool="email@1", payload={"to": "a@b.c"})
    started, tool = executor.handle(record(cmd))
    assert tool.value.deadline == soon  # type: ignore[union-attr]


def test_a_malformed_llm_command_is_rejected_before_anything_is_called(executor: ExecutorProcessor) -> None:
    with pytest.raises(Reject):
        executor.handle(record(command(prompt="no model")))
    with pytest.raises(Reject):
        executor.handle(record(command(model="sim-small", prompt="x", response_format="yaml")))
