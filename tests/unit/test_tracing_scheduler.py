"""A run driven through the scheduler's real core (its own created/started/retry/completed facts, and
the workers' facts built the way the services build them, keel.events.step_fact) gives the trace
keel.tracing promises: the request's W3C trace id on every span, the retry's reason on the failed
attempt, the key and the commit on the step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from keel import events as ev
from keel.contracts import (
    CommitDetail,
    ModelDetail,
    RunEvent,
    RunRequested,
    StepCommand,
    StepDetail,
    ToolDetail,
)
from keel.tracing import SpanData, spans_of
from keel.workflows import Catalog
from services.scheduler.core import decide, due, next_timer

CATALOG = Catalog.load()
MODES = {"email@1": "provider_key", "crm@1": "lookup"}.get
T0 = 1_773_059_696_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OUTPUTS = {"draft_email": {"subject": "Hi", "body": "Hello Ada"}, "log_to_crm": {"activity_id": "act_1"}}


class Log:
    """The run's events in log order, and the step commands still to carry out."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.commands: list[StepCommand] = []

    def take(self, outputs: list[Any]) -> None:
        self.events += [o for o in outputs if isinstance(o, RunEvent)]
        self.commands += [o for o in outputs if isinstance(o, StepCommand)]


def worker_facts(cmd: StepCommand, now: int, fail: str | None = None) -> list[RunEvent]:
    """What the executor, the adapters and the ledger publish for one attempt."""
    if cmd.kind == "llm":
        model = ModelDetail(provider="sim", prompt_tokens=90, completion_tokens=30, latency_ms=40)
        return [
            ev.step_fact(cmd, ev.STEP_STARTED, now, "executor", step_detail=StepDetail(kind="llm")),
            ev.step_fact(
                cmd,
                ev.MODEL_CALLED,
                now + 50,
                "executor",
                agent_id="prospecting_writer_v3",  # the executor names the step's agent
                model="sim-small",
                model_call=model,
            ),
            ev.step_fact(
                cmd,
                ev.STEP_COMMITTED,
                now + 60,
                "executor",
                output_json=json.dumps(OUTPUTS[cmd.step]),
                commit=CommitDetail(committed_at=datetime.fromtimestamp((now + 60) / 1000, UTC)),
            ),
        ]
    tool = json.loads(cmd.input_json)["tool"]
    called = ev.step_fact(cmd, ev.TOOL_CALLED, now, "adapters", tool=ToolDetail(tool=tool))
    if fail:
        detail = ToolDetail(tool=tool, idempotency_mode="provider_key", failure_class=fail, http_status=503)
        return [called, ev.step_fact(cmd, ev.TOOL_FAILED, now + 20, "adapters", error="503", tool=detail)]
    external = f"id-{cmd.step}"
    output = OUTPUTS.get(cmd.step, {"message_id": external})
    done = ToolDetail(tool=tool, idempotency_mode="provider_key", external_id=external, latency_ms=20)
    at = datetime.fromtimestamp((now + 30) / 1000, UTC)
    return [
        called,
        ev.step_fact(cmd, ev.TOOL_SUCCEEDED, now + 20, "adapters", tool=done, output_json=json.dumps(output)),
        ev.step_fact(
            cmd,
            ev.STEP_COMMITTED,
            now + 30,
            "ledger",
            output_json=json.dumps(output),
            commit=CommitDetail(external_id=external, committed_at=at),
        ),
    ]


def run_with_a_retry() -> list[RunEvent]:
    log, now = Log(), T0
    request = RunRequested(
        request_id="req",
        run_id="run-s",
        tenant_id="acme",
        workflow="outbound_email",
        input_json=json.dumps({"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}),
        requested_at=datetime.fromtimestamp(T0 / 1000, UTC),
        trace_id=TRACE,
    )
    d = decide(None, request, 0, now, CATALOG)
    state = d.state
    assert state is not None
    log.take(d.outputs)
    failed_once = False
    while log.commands:
        cmd = log.commands.pop(0)
        now += 100
        fail = "transient" if cmd.step == "send_email" and not failed_once else None
        failed_once = failed_once or fail is not None
        for fact in worker_facts(cmd, now, fail):
            log.events.append(fact)
            log.take(decide(state, fact, 0, fact.ts.timestamp() * 1000, CATALOG).outputs)
        if fail:
            fire_at = next_timer(state)
            assert fire_at is not None
            now = fire_at
            log.take(due(state, fire_at, CATALOG, MODES).outputs)
    assert state.status == "completed"
    return log.events


def one(spans: list[SpanData], name: str, **attrs: object) -> SpanData:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (name, attrs, [s.name for s in spans])
    return found[0]


def test_the_scheduler_cores_run_gives_its_trace() -> None:
    events = run_with_a_retry()
    kinds = [e.event for e in events]
    assert kinds[:3] == ["created", "scheduled", "started"] and kinds[-1] == "completed"
    assert ev.RETRY_SCHEDULED in kinds
    spans = spans_of(events)
    assert {s.trace_id for s in spans} == {int(TRACE, 16)}  # the request's trace id, carried by every event
    root = spans[0]
    assert root.name == "keel.run outbound_email" and root.status == "ok"
    ids = {s.span_id: s for s in spans}
    for s in spans[1:]:
        assert s.parent_span_id in ids
    send = one(spans, "keel.step send_email")
    first = one(spans, "keel.attempt send_email", **{"keel.attempt": 1})
    second = one(spans, "keel.attempt send_email", **{"keel.attempt": 2})
    assert first.status == "error" and first.status_description == "transient"
    retry = next(e for e in first.events if e.name == ev.RETRY_SCHEDULED)
    assert retry.attributes["error.type"] == "transient" and retry.attributes["keel.retry.reason"]
    assert (
        second.attributes["keel.commit.external_id"]
        == send.attributes["keel.commit.external_id"]
        == "id-send_email"
    )
    key = send.attributes["keel.idempotency_key"]
    assert key.startswith("acme|outbound_email|run-s|send_email|sha256:")
    assert first.attributes["keel.idempotency_key"] == second.attributes["keel.idempotency_key"] == key
    chat = one(spans, "chat sim-small")
    assert chat.parent_span_id == one(spans, "keel.attempt draft_email").span_id
    assert chat.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 90
    assert chat.attributes["keel.agent_id"] == "prospecting_writer_v3"
    assert all(s.start_ns <= s.end_ns for s in spans)
