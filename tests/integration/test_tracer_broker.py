"""The tracer against the real broker: a run's events on a topic become its trace in the SDK's
in-memory exporter, identical to spans_of over the same events; offsets move only after the exporter
accepted the spans, so a refused export is read and exported again by the next instance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from helpers import unique, wait_for
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from tracer_topic import PARTITIONS, events_topic, produce  # noqa: F401 - a fixture
from unit.agent_stories import AGENT, support_triage
from unit.test_projection_core import completed_after_retry

from keel.serde import Serde
from keel.settings import Settings
from keel.tracing import spans_of
from services.tracer.config import TracerSettings
from services.tracer.service import Tracer

pytestmark = pytest.mark.integration


class Refusing(InMemorySpanExporter):
    """A collector that is down: every export fails."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.tries += 1
        return SpanExportResult.FAILURE


@pytest.fixture
def running() -> Iterator[Any]:
    started: list[tuple[Tracer, threading.Thread]] = []

    def start(tracer: Tracer) -> Tracer:
        thread = threading.Thread(target=tracer.run, name="tracer", daemon=True)
        thread.start()
        started.append((tracer, thread))
        return tracer

    yield start
    for tracer, thread in started:
        tracer.stop()
        thread.join(15)


def committed(settings: Settings, topic: str, group: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": unique("ends")})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def as_tuples(spans: list[ReadableSpan]) -> set[tuple[Any, ...]]:
    return {
        (
            s.name,
            s.context.trace_id,
            s.context.span_id,
            s.parent.span_id if s.parent else None,
            s.start_time,
            s.end_time,
        )
        for s in spans
    }


def test_a_runs_events_become_its_trace_and_a_refused_export_is_read_again(
    stack: Settings,
    events_topic: tuple[str, Serde],  # noqa: F811 - the imported fixture
    running: Any,
) -> None:
    topic, serde = events_topic
    agent, plain = (
        support_triage(unique("run-agent")).events,
        completed_after_retry(unique("run-tool")).events,
    )
    held = completed_after_retry(unique("run-held")).events[:9]  # no end yet: leaves at the idle timeout
    runs_from = produce(stack, topic, serde, agent + plain + held)
    settings = TracerSettings(
        tracer_start="earliest", tracer_idle_s=2.0, tracer_commit_interval_s=0.2, tracer_retry_s=0.5
    )
    group = unique("test-tracer")

    down = Refusing()
    first = running(Tracer(settings, down, topic=topic, group_id=group))
    wait_for(lambda: down.tries >= 2 and first.paused, timeout=30, what="refused exports, reading paused")
    # While the collector refuses, nothing more is read: a run produced now stays on the topic.
    late = completed_after_retry(unique("run-late")).events
    for p, offset in produce(stack, topic, serde, late).items():
        runs_from.setdefault(p, offset)
    tries = down.tries
    wait_for(lambda: down.tries >= tries + 3, timeout=30, what="more refused tries, the loop polling")
    assert late[0].run_id not in first.buffer.run_ids()
    first.stop()
    wait_for(
        lambda: any(o >= 0 for o in committed(stack, topic, group).values()), timeout=10, what="a commit"
    )
    # Nothing of a refused or unread run is committed: a partition stays at or before its first run.
    assert all(o <= runs_from[p] for p, o in committed(stack, topic, group).items() if p in runs_from)

    collector = InMemorySpanExporter()
    second = running(Tracer(settings, collector, topic=topic, group_id=group))
    want = spans_of(agent) + spans_of(plain) + spans_of(held) + spans_of(late)
    wait_for(lambda: len(collector.get_finished_spans()) >= len(want), timeout=30, what="the four traces")
    out = list(collector.get_finished_spans())
    assert as_tuples(out) == {
        (s.name, s.trace_id, s.span_id, s.parent_span_id, s.start_ns, s.end_ns) for s in want
    }
    assert len(out) == len(want)  # each span once: no run was exported twice by this instance

    agent_span = next(s for s in out if s.name == f"invoke_agent {AGENT}")
    assert agent_span.attributes[gen_ai.GEN_AI_AGENT_NAME] == AGENT
    chats = [s for s in out if s.name.startswith("chat ")]
    assert {s.attributes[gen_ai.GEN_AI_OPERATION_NAME] for s in chats} == {"chat"}
    assert all(s.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] > 0 for s in chats)
    sends = [s for s in out if s.name == "keel.step send_email"]
    by_run = {s.attributes["keel.run_id"]: s for s in sends}
    assert set(by_run) == {plain[0].run_id, late[0].run_id}  # the held run got no further
    assert by_run[plain[0].run_id].attributes["keel.commit.external_id"] == "msg-1"
    open_runs = [s for s in out if s.parent is None and s.attributes.get("keel.run.open")]
    assert [s.attributes["keel.run_id"] for s in open_runs] == [held[0].run_id]

    # Every export accepted: the offsets reach the end of each partition that holds messages (the
    # runs' keys may all hash to one partition; an empty one has nothing to commit).
    def at_the_end() -> bool:
        end = {p: o for p, o in ends(stack, topic).items() if o > 0}
        return {p: o for p, o in committed(stack, topic, group).items() if p in end} == end

    wait_for(at_the_end, timeout=20, what="offsets at the end")
    assert second.exported_runs == 4
