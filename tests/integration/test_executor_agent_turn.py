"""An agent's model turn through the executor on the real broker: the step command in (Avro, with its
call and agent), the model asked once over HTTP with the tools and the turn's tags, and the turn's
commit point out: step_started, then model_called carrying the assistant's tool calls.

The model is a small OpenAI-compatible server started here, so the test depends on nothing but the
chat-completions shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from helpers import make_topics, read_topic, unique, wait_for

import keel.events as ev
from keel.background import BackgroundCalls
from keel.contracts import RunEvent, StepCommand
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS
from keel.txloop import Output, Record, TransactionalLoop
from services.executor.router import ModelRouter, RouterSettings
from services.executor.service import ExecutorProcessor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CALL = {
    "id": "call_7",
    "type": "function",
    "function": {"name": "lookup_customer", "arguments": '{"email": "ada@example.com"}'},
}
TOOLS = [{"type": "function", "function": {"name": "lookup_customer", "parameters": {"type": "object"}}}]


class FakeModel(ThreadingHTTPServer):
    """Answers every chat completion with one tool call and no text; keeps each request body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeModel

    def do_POST(self) -> None:
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        message = {"role": "assistant", "content": None, "tool_calls": [CALL]}
        body = json.dumps(
            {
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 18},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def model() -> Iterator[FakeModel]:
    server = FakeModel()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class OnTestTopics(ExecutorProcessor):
    """The executor with its facts sent to this test's topic instead of keel.run-events."""

    def __init__(self, out_topic: str, *args: Any) -> None:
        super().__init__(*args)
        self.out_topic = out_topic

    def handle(self, record: Record) -> Sequence[Output]:
        return [self._here(o) for o in super().handle(record)]  # type: ignore[arg-type]

    def tick(self, now_ms: int) -> Sequence[Output]:
        return [self._here(o) for o in super().tick(now_ms)]

    def _here(self, out: Output) -> Output:
        return Output(self.out_topic, out.key, out.value) if out.topic == RUN_EVENTS else out


def turn_command(run_id: str) -> StepCommand:
    body = {
        "model": "sim-medium",
        "agent": "support_triage_v1",
        "messages": [{"role": "user", "content": "Who is ada@example.com?"}],
        "tools": TOOLS,
        "response_format": None,
    }
    return StepCommand(
        command_id=f"{run_id}/triage/1/turn-1",
        run_id=run_id,
        tenant_id="acme",
        workflow="support",
        workflow_version=1,
        step="triage",
        kind="agent",
        attempt=1,
        input_json=json.dumps(body),
        issued_at=datetime.now(UTC),
        deadline=datetime.now(UTC) + timedelta(seconds=60),
        call="turn-1",
        agent_id="support_triage_v1",
    )


def test_an_agent_turn_commits_its_model_called_through_the_broker(stack: Settings, model: FakeModel) -> None:
    in_t, out_t, dlq = unique("test.step-commands"), unique("test.run-events"), unique("test.dlq")
    make_topics(stack, in_t, out_t, dlq)
    envelopes = {in_t: "step_command", out_t: "run_event", dlq: "dead_letter"}
    register_contracts(registry_client(stack.schema_registry_url), envelopes)
    serde = Serde(registry_client(stack.schema_registry_url), envelopes)
    http = httpx.Client(trust_env=False)
    processor = OnTestTopics(
        out_t, ModelRouter(RouterSettings(model_url=model.url), http), BackgroundCalls(2, "model-call")
    )
    loop = TransactionalLoop(
        stack,
        serde,
        processor,
        group_id=unique("group"),
        topics=[in_t],
        transactional_id=unique("txid"),
        dead_letter_topic=dlq,
    )
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    run_id = unique("run")
    try:
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
        cmd = turn_command(run_id)
        producer.produce(in_t, key=run_id, value=serde.encode(in_t, cmd))
        assert producer.flush(10) == 0
        facts: list[RunEvent] = []

        def both_committed() -> bool:
            facts[:] = [serde.decode(out_t, m.value()) for m in read_topic(stack, out_t, timeout=2)]
            return len(facts) >= 2 or not runner.is_alive()

        wait_for(both_committed, 45, "step_started and model_called")
        assert runner.is_alive()
    finally:
        loop.stop()
        runner.join(30)
        http.close()
    started, called = facts
    assert (started.event, called.event) == ("step_started", "model_called")
    assert [f.event_id for f in facts] == [
        f"{run_id}:triage:turn-1:1:step_started",
        f"{run_id}:triage:turn-1:1:model_called",
    ]
    assert {(f.call, f.agent_id) for f in facts} == {("turn-1", "support_triage_v1")}
    assert called.input_ref == started.input_ref == ev.content_ref_of_json(cmd.input_json)
    assert called.output_json is not None
    assert json.loads(called.output_json) == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert called.model == "sim-medium" and called.cost_usd_est is not None and called.cost_usd_est > 0
    assert called.model_call is not None and called.model_call.provider == model.url.split("/")[2]
    assert (called.model_call.prompt_tokens, called.model_call.completion_tokens) == (120, 18)
    [asked] = model.bodies  # asked once, after step_started committed
    assert asked["tools"] == TOOLS and asked["messages"] == [
        {"role": "user", "content": "Who is ada@example.com?"}
    ]
    assert asked["metadata"] == {
        "keel_tenant": "acme",
        "keel_run": run_id,
        "keel_step": "triage",
        "keel_call": "turn-1",
    }
