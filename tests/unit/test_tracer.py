"""The tracer's pure parts: which runs leave the buffer when, the offsets it may commit, and the spans
as the OpenTelemetry SDK exports them (its in-memory exporter)."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import StatusCode
from unit.agent_stories import AGENT, support_triage
from unit.test_projection_core import completed_after_retry

from keel.tracing import spans_of
from services.tracer.core import RunBuffer
from services.tracer.export import export

TP = ("t", 0)


def test_a_run_leaves_the_buffer_when_it_ends_and_holds_the_offset_until_settled() -> None:
    buf = RunBuffer(idle_s=60, max_events=1000)
    buf.assign(TP)
    a, b = completed_after_retry("run-a").events, completed_after_retry("run-b").events
    offset = 0
    for e in a[:5]:
        buf.read(TP, offset, e, now_s=0)
        offset += 1
    for e in b:  # run-b ends while run-a is still open
        buf.read(TP, offset, e, now_s=1)
        offset += 1
    ready = buf.ready(now_s=1)
    assert [r.run_id for r in ready] == ["run-b"] and ready[0].events[0].event == "created"
    assert buf.positions() == {TP: 0}  # run-a's first offset: committing past it would lose run-a
    buf.committed({TP: 0})
    for e in a[5:]:
        buf.read(TP, offset, e, now_s=2)
        offset += 1
    buf.read(TP, offset, None, now_s=2)  # an unreadable message: only moves the position
    offset += 1
    done = buf.ready(now_s=2)
    assert [r.run_id for r in done] == ["run-a"] and len(done[0].events) == len(a)
    assert buf.positions() == {}  # both still being exported: nothing moved
    buf.settle(ready + done)
    assert buf.positions() == {TP: offset}


def test_an_idle_run_leaves_after_the_timeout_and_a_big_one_at_the_cap() -> None:
    buf = RunBuffer(idle_s=10, max_events=4)
    events = completed_after_retry("run-i").events
    for i, e in enumerate(events[:3]):
        buf.read(TP, i, e, now_s=0)
    assert buf.ready(now_s=9.9) == []
    buf.touch(now_s=5)  # reading was paused meanwhile: the quiet does not count
    assert buf.ready(now_s=14.9) == []
    assert [len(r.events) for r in buf.ready(now_s=15)] == [3]
    for i, e in enumerate(events[3:7], start=3):
        buf.read(TP, i, e, now_s=11)
    assert [len(r.events) for r in buf.ready(now_s=11)] == [4]


def test_a_revoked_partition_forgets_its_runs() -> None:
    buf = RunBuffer(idle_s=10, max_events=100)
    buf.read(TP, 0, completed_after_retry("run-r").events[0], now_s=0)
    buf.revoke(TP)
    assert buf.held() == 0 and buf.positions() == {}


def test_the_sdk_exports_the_genai_spans_with_their_ids_parents_and_usage() -> None:
    exporter = InMemorySpanExporter()
    spans = spans_of(support_triage("run-x").events) + spans_of(completed_after_retry("run-y").events)
    assert export(exporter, spans, Resource.create({"service.name": "keel"}))
    out = exporter.get_finished_spans()
    assert len(out) == len(spans)
    ids = {s.context.span_id: s for s in out}
    for mine, theirs in zip(spans, out, strict=True):
        assert theirs.context.trace_id == mine.trace_id and theirs.context.span_id == mine.span_id
        assert (theirs.parent.span_id if theirs.parent else None) == mine.parent_span_id
        assert theirs.start_time == mine.start_ns and theirs.end_time == mine.end_ns
        if theirs.parent is not None:
            assert theirs.parent.span_id in ids  # every parent is in the export
    assert out[0].resource.attributes["service.name"] == "keel"
    agent = next(s for s in out if s.name == f"invoke_agent {AGENT}")
    assert agent.attributes[gen_ai.GEN_AI_AGENT_NAME] == AGENT
    chats = [s for s in out if s.name == "chat sim-medium"]
    assert sum(s.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] for s in chats) == 412 + 520 + 700 + 800
    assert all(ids[c.parent.span_id].name == "keel.attempt triage" for c in chats if c.parent)
    tool = next(s for s in out if s.name == "execute_tool email@1")
    assert tool.attributes[gen_ai.GEN_AI_TOOL_CALL_ID] == "turn-3.call-1"
    failed = next(
        s for s in out if s.name == "execute_tool issue_refund@1" and s.status.status_code is StatusCode.ERROR
    )
    assert failed.status.description == "unknown_outcome"
    send = next(s for s in out if s.name == "keel.step send_email")
    assert send.attributes["keel.commit.external_id"] == "msg-1"
    assert send.attributes["keel.idempotency_key"].startswith("acme|outbound_email|run-y|send_email|")


class Refusing(InMemorySpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        return SpanExportResult.FAILURE


def test_an_export_the_collector_refused_is_reported() -> None:
    assert not export(Refusing(), spans_of(completed_after_retry("run-z").events), Resource.create({}))
    assert export(Refusing(), [], Resource.create({}))


class Counting(InMemorySpanExporter):
    """Accepts the first `accept` requests, refuses the next ones; records each request's size."""

    def __init__(self, accept: int) -> None:
        super().__init__()
        self.accept, self.sizes = accept, []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.sizes.append(len(spans))
        if len(self.sizes) > self.accept:
            return SpanExportResult.FAILURE
        return super().export(spans)


def test_the_shell_exports_in_bounded_requests_and_keeps_what_was_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from services.tracer import service
    from services.tracer.config import TracerSettings

    monkeypatch.setattr(service, "SPANS_PER_EXPORT", 40)
    exporter = Counting(accept=1)
    # The consumer is built but never used here: nothing connects.
    tracer = service.Tracer(TracerSettings(kafka_bootstrap="127.0.0.1:9"), exporter, topic="t", group_id="g")
    per_run = len(spans_of(completed_after_retry("r").events))
    for i in range(5):
        for offset, e in enumerate(completed_after_retry(f"run-{i}").events):
            tracer.buffer.read(TP, i * 100 + offset, e, now_s=0)
    try:
        tracer.flush(now=0)
        # Runs are added until a request holds 40 spans or more; the second request is refused.
        assert per_run < 40 and exporter.sizes == [4 * per_run, per_run]
        assert tracer.exported_runs == 4 and len(tracer.to_export) == 1 and tracer.retry_at == 5.0
        assert tracer.buffer.positions() == {TP: 400}  # the refused run holds the partition
        tracer.flush(now=4.9)  # not yet time
        assert len(exporter.sizes) == 2
        exporter.accept = 10
        tracer.flush(now=5.0)
        last = 400 + len(completed_after_retry("r").events)
        assert (
            tracer.exported_runs == 5 and tracer.to_export == [] and tracer.buffer.positions() == {TP: last}
        )
        ids = [s.context.span_id for s in exporter.get_finished_spans()]
        assert len(ids) == len(set(ids)) == 5 * per_run
    finally:
        tracer.consumer.close()


def test_without_an_otlp_endpoint_the_tracer_refuses_to_start(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from services.tracer.__main__ import EX_CONFIG, main

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert main([]) == EX_CONFIG == 78  # keel_ops.supervise does not restart it
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in capsys.readouterr().err
