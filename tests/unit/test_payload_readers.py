"""The executor and the adapters read a command's payload back from the blob store, and a blob gone
missing fails the step with a reason naming it: nothing is called with a null in its place."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from keel.background import BackgroundCalls
from keel.blobs import BlobStore
from keel.claimcheck import offload, ref_of_marker_text
from keel.contracts import RunEvent, StepCommand, ToolCommand
from keel.events import inline
from keel.txloop import Output, Record
from services.adapters import AdapterSettings
from services.adapters.service import AdapterProcessor
from services.executor.service import ExecutorProcessor

PAYLOAD = {"to": "ada@example.com", "subject": "Hi", "body": "b" * 100_000}
LIMIT = 64 * 1024
SOON = datetime.now(UTC) + timedelta(minutes=5)


@pytest.fixture
def store(tmp_path) -> BlobStore:
    return BlobStore(str(tmp_path))


def step_command() -> StepCommand:
    return StepCommand(
        command_id="c", run_id="run-1", tenant_id="acme", workflow="w", workflow_version=1, step="send",
        kind="tool", attempt=1, input_json=inline({"tool": "email@1", "payload": PAYLOAD})[0],
        idempotency_key="acme|w|run-1|send|sha256:x", issued_at=SOON, deadline=SOON,
    )  # fmt: skip


def tool_command() -> ToolCommand:
    return ToolCommand(
        command_id="c", run_id="run-1", tenant_id="acme", workflow="w", workflow_version=1, step="send",
        attempt=1, tool="email@1", payload_json=inline(PAYLOAD)[0], idempotency_key="acme|w|run-1|send|k",
        issued_at=SOON, deadline=SOON,
    )  # fmt: skip


def record(topic: str, value: object) -> Record:
    return Record(topic, 0, 0, "run-1", value, 0)


def events(outputs) -> list[RunEvent]:
    return [o.value for o in outputs if isinstance(o, Output) and isinstance(o.value, RunEvent)]


def test_the_executor_turns_a_step_command_by_reference_into_the_whole_tool_command(store):
    executor = ExecutorProcessor(None, BackgroundCalls(1), store)  # type: ignore[arg-type]
    outputs = executor.handle(record("keel.step-commands", offload(step_command(), store, LIMIT)))
    [started, command] = outputs
    assert started.value.event == "step_started" and started.value.input_json == step_command().input_json
    assert json.loads(command.value.payload_json) == PAYLOAD


def test_the_executor_fails_the_step_when_its_input_blob_is_missing(store):
    sent = offload(step_command(), store, LIMIT)
    ref = ref_of_marker_text(sent.input_json) or ""
    store.delete("acme", ref)
    executor = ExecutorProcessor(None, BackgroundCalls(1), store)  # type: ignore[arg-type]
    [failed] = events(executor.handle(record("keel.step-commands", sent)))
    assert failed.event == "step_failed" and failed.step_detail.failure_class == "validation"
    assert ref in (failed.error or "") and "missing" in (failed.error or "")


def test_the_adapters_call_with_the_whole_payload_and_refuse_a_missing_one(store):
    with httpx.Client(trust_env=False) as http:
        calls = BackgroundCalls(1)
        adapters = AdapterProcessor(AdapterSettings(), {}, http, blobs=store, calls=calls)
        sent = offload(tool_command(), store, LIMIT)
        handled = adapters.handle(record("keel.tool-commands", sent))
        [called] = events(handled)
        assert called.event == "tool_called" and json.loads(called.input_json or "") == PAYLOAD
        assert len(calls._staged) == 1  # the call waits for the commit of tool_called
        calls.drop([("keel.tool-commands", 0)])

        ref = ref_of_marker_text(sent.payload_json) or ""
        store.delete("acme", ref)
        handled = adapters.handle(record("keel.tool-commands", sent))
        assert not calls._staged  # the provider is never called
        [failed] = events(handled)
        assert failed.event == "tool_failed" and failed.tool.failure_class == "validation"
        assert ref in (failed.error or "") and "provider not called" in (failed.error or "")
