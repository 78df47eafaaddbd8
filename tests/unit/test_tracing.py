"""A run's spans from its events (keel.tracing): tree, names, GenAI attributes, keys, commits, errors."""

from __future__ import annotations

import random
from dataclasses import replace

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from unit.agent_stories import AGENT, support_triage
from unit.test_projection_core import completed_after_retry, failed

from keel import events as ev
from keel.tracing import (
    SpanData,
    attempt_span_id,
    derived_id,
    run_span_id,
    spans_of,
    step_span_id,
    trace_id_of,
)

W3C = "0af7651916cd43dd8448eb211c80319c"


def by_name(spans: list[SpanData], name: str) -> list[SpanData]:
    return [s for s in spans if s.name == name]


def one(spans: list[SpanData], name: str, **attrs: object) -> SpanData:
    found = [s for s in by_name(spans, name) if all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (name, attrs, [(s.name, dict(s.attributes)) for s in spans])
    return found[0]


def test_ids_are_frozen_golden_values() -> None:
    # FROZEN: a change splits every trace re-exported after an upgrade from the one exported before.
    # The values: the first bytes of sha256("run|run-1"), sha256("attempt|run-1|send||2"), ...
    assert f"{run_span_id('run-1'):016x}" == "79bdf4f0a81a0f63"
    assert f"{attempt_span_id('run-1', 'send', 2):016x}" == "cd794b72aad01aab"
    assert f"{trace_id_of('run-1', None):032x}" == "214fe9655c6099f0f881bfbada42349f"


def test_trace_id_is_the_events_w3c_id_or_derived_from_the_run() -> None:
    assert trace_id_of("r", W3C) == int(W3C, 16)
    assert trace_id_of("r", f"00-{W3C}-b7ad6b7169203331-01") == int(W3C, 16)
    assert trace_id_of("r", "ticket-42") == trace_id_of("r", None) == derived_id(16, "trace", "r")
    assert trace_id_of("r", "0" * 32) == derived_id(16, "trace", "r")  # the invalid all-zero id


def test_a_tool_step_with_a_retry_and_a_commit_and_an_llm_step() -> None:
    events = [replace(e, trace_id=W3C) for e in completed_after_retry("run-t").events]
    spans = spans_of(events)
    assert {s.trace_id for s in spans} == {int(W3C, 16)}
    root = spans[0]
    assert root.name == "keel.run outbound_email" and root.parent_span_id is None
    assert root.span_id == run_span_id("run-t") and root.status == "ok"
    assert root.attributes["keel.run.status"] == ev.COMPLETED
    assert len({s.span_id for s in spans}) == len(spans)
    assert all(s.start_ns <= s.end_ns for s in spans)
    for s in spans:
        assert s.attributes["keel.tenant"] == "acme" and s.attributes["keel.run_id"] == "run-t"

    send = one(spans, "keel.step send_email")
    assert send.parent_span_id == root.span_id and send.status == "ok"
    assert send.attributes["keel.step.kind"] == "tool" and send.attributes["keel.attempt"] == 2
    key = "acme|outbound_email|run-t|send_email|sha256:" + "0" * 64
    assert send.attributes["keel.idempotency_key"] == key
    assert send.attributes["keel.commit.external_id"] == "msg-1" and send.attributes["keel.commit.committed"]

    first = one(spans, "keel.attempt send_email", **{"keel.attempt": 1})
    second = one(spans, "keel.attempt send_email", **{"keel.attempt": 2})
    assert first.parent_span_id == second.parent_span_id == send.span_id
    assert first.span_id == attempt_span_id("run-t", "send_email", 1)
    assert first.status == "error" and first.status_description == "transient"
    assert first.attributes["error.type"] == "transient" and "keel.commit.committed" not in first.attributes
    assert [e.name for e in first.events] == [ev.STEP_STARTED, ev.RETRY_SCHEDULED]
    assert first.events[1].attributes["keel.retry.delay_ms"] == 200
    assert second.status == "ok" and second.attributes["keel.commit.external_id"] == "msg-1"
    assert second.attributes["keel.idempotency_key"] == key

    tools = by_name(spans, "execute_tool crm@1")
    sends = [t for t in tools if t.parent_span_id in (first.span_id, second.span_id)]
    assert [t.status for t in sends] == ["error", "ok"]
    for t in sends:
        assert t.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "execute_tool"
        assert t.attributes[gen_ai.GEN_AI_TOOL_NAME] == "crm@1"
        assert t.attributes["keel.idempotency_key"] == key
    assert sends[0].attributes[gen_ai.GEN_AI_TOOL_CALL_ID] == "send_email#1"
    assert sends[1].attributes["keel.tool.external_id"] == "msg-1"

    draft_attempt = one(spans, "keel.attempt draft_email")
    chat = one(spans, "chat sim-small")
    assert chat.parent_span_id == draft_attempt.span_id and chat.kind == "client"
    assert chat.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
    assert (
        chat.attributes[gen_ai.GEN_AI_REQUEST_MODEL]
        == chat.attributes[gen_ai.GEN_AI_RESPONSE_MODEL]
        == "sim-small"
    )
    assert chat.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 120
    assert chat.attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 80
    assert chat.attributes[gen_ai.GEN_AI_PROVIDER_NAME] == "sim"
    assert chat.attributes["keel.step"] == "draft_email" and chat.attributes["keel.attempt"] == 1


def test_an_agent_step_is_invoke_agent_with_its_turns_and_tool_calls() -> None:
    spans = spans_of(support_triage("run-a").events)
    root = spans[0]
    assert root.trace_id == trace_id_of("run-a", None)  # no trace id on these events: derived
    agent = one(spans, f"invoke_agent {AGENT}")
    assert agent.parent_span_id == root.span_id and agent.span_id == step_span_id("run-a", "triage")
    assert agent.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert agent.attributes[gen_ai.GEN_AI_AGENT_NAME] == AGENT
    assert agent.status == "ok" and agent.attributes["keel.commit.committed"]
    assert "keel.idempotency_key" not in agent.attributes  # each call's key is on its own spans
    assert [e.name for e in agent.events] == [ev.TOOL_CALL_REFUSED, ev.STEP_COMMITTED]

    turn1 = one(spans, "keel.attempt triage", **{"keel.call": "turn-1", "keel.attempt": 1})
    assert turn1.span_id == attempt_span_id("run-a", "triage", 1, "turn-1")
    assert turn1.parent_span_id == agent.span_id
    chats = by_name(spans, "chat sim-medium")
    assert len(chats) == 4
    chat1 = next(c for c in chats if c.parent_span_id == turn1.span_id)
    assert chat1.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 412
    assert chat1.attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 38
    assert chat1.end_ns - chat1.start_ns == 120 * 1_000_000  # the model call's latency
    failed_turn = one(spans, "keel.attempt triage", **{"keel.call": "turn-2", "keel.attempt": 1})
    assert failed_turn.status == "error" and failed_turn.status_description == "transient"

    refunds = by_name(spans, "execute_tool issue_refund@1")
    assert {r.attributes[gen_ai.GEN_AI_TOOL_CALL_ID] for r in refunds} == {"turn-2.call-0", "turn-3.call-0"}
    timed_out = one(spans, "execute_tool issue_refund@1", **{"keel.call": "turn-2.call-0", "keel.attempt": 1})
    assert timed_out.status == "error" and timed_out.attributes["error.type"] == "unknown_outcome"
    retried = one(spans, "keel.attempt triage", **{"keel.call": "turn-2.call-0", "keel.attempt": 2})
    assert retried.attributes["keel.commit.external_id"] == "re_1"
    answered = one(spans, "execute_tool issue_refund@1", **{"keel.call": "turn-3.call-0"})
    assert answered.attributes["keel.tool.already_committed"] is True
    assert len({r.attributes["keel.idempotency_key"] for r in refunds}) == 1  # one key, one effect
    email = one(spans, "execute_tool email@1")
    email_attempt = one(spans, "keel.attempt triage", **{"keel.call": "turn-3.call-1"})
    assert email.parent_span_id == email_attempt.span_id
    assert email_attempt.attributes["keel.commit.external_id"] == "msg_1"
    assert email.attributes["keel.idempotency_key"] == email_attempt.attributes["keel.idempotency_key"]


def test_a_failed_run_is_an_error_with_the_failure_class() -> None:
    spans = spans_of(failed("run-f").events)
    root, step = spans[0], one(spans, "keel.step draft_email")
    assert root.status == "error" and root.status_description == "validation"
    assert step.status == "error" and step.attributes["error.type"] == "validation"


def test_the_same_events_give_the_same_spans_in_any_copy_count() -> None:
    events = completed_after_retry("run-d").events
    again = events + random.Random(7).sample(events, 5)  # re-read copies after a crash
    assert spans_of(again) == spans_of(events)
    assert spans_of([]) == []


def test_a_run_exported_before_its_end_is_marked_open() -> None:
    events = completed_after_retry("run-o").events
    held = spans_of(events[:6])
    assert held[0].attributes["keel.run.open"] is True and held[0].status == "unset"
    assert held[0].span_id == spans_of(events)[0].span_id  # the later pieces link to the same spans
