"""Decisions through the scheduler's transactional loop against the real broker: a held send, an edit
refused for the effect it may duplicate, a retry under the same key, and a second decision refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer
from helpers import read_topic, unique, wait_for
from scheduler_kit import catalog
from scheduler_topics import running, scheduler_topics, serde

from keel import events as ev
from keel.contracts import CommitDetail, ControlCommand, RunEvent, RunRequested, StepCommand, ToolDetail
from keel.workflows import parse_workflow
from services.scheduler.config import SchedulerSettings
from services.scheduler.service import SchedulerProcessor

pytestmark = pytest.mark.integration

SEND = parse_workflow(
    {
        "name": "held_send",
        "version": 1,
        "input": {"to": "string"},
        "steps": [
            {
                "name": "send",
                "kind": "tool",
                "tool": "email@1",
                "timeout_ms": 120_000,  # the attempts settle by the facts this test sends, never by a timer
                "input": {"to": "{{ input.to }}", "subject": "Hi", "body": "Hello"},
            }
        ],
    }
)


def test_decisions_travel_on_control_and_the_second_on_a_case_is_refused(stack):
    topics = scheduler_topics(stack)
    codec = serde(stack, topics)
    proc = SchedulerProcessor(
        stack,
        catalog(SEND),
        {}.get,
        topics=topics,
        config=SchedulerSettings(budgets=False),  # no enforcer here
        group=unique("test-scheduler"),
    )
    run_id = unique("run")
    # The Java client's partitioner, as every Keel producer uses: each message on its run's partition.
    producer = Producer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
        }
    )

    def send(topic: str, value: Any) -> None:
        producer.produce(topic, key=run_id, value=codec.encode(topic, value))
        assert producer.flush(10) == 0

    def facts() -> list[RunEvent]:
        found = [codec.decode(topics.events, m.value()) for m in read_topic(stack, topics.events, timeout=2)]
        return [f for f in found if f.run_id == run_id and f.source == "scheduler"]

    def commands() -> list[StepCommand]:
        found = [
            codec.decode(topics.commands, m.value()) for m in read_topic(stack, topics.commands, timeout=2)
        ]
        return [c for c in found if c.run_id == run_id]

    def decide(cid: str, args: dict[str, Any]) -> None:
        send(
            topics.control,
            ControlCommand(
                command_id=cid, run_id=run_id, tenant_id="acme", action="decide", reason="checked the outbox",
                issued_by="operator:ab12", issued_at=datetime.now(UTC), args_json=json.dumps(args),
            ),
        )  # fmt: skip

    def fact(cmd: StepCommand, kind: str, source: str, **fields: Any) -> RunEvent:
        return ev.step_fact(cmd, kind, ev.now_ms(), source, **fields)

    with running(stack, topics, proc):
        send(
            topics.requests,
            RunRequested(
                request_id=unique("req"), run_id=run_id, tenant_id="acme", workflow="held_send",
                input_json=json.dumps({"to": "ada@example.com"}), requested_at=datetime.now(UTC),
            ),
        )  # fmt: skip
        wait_for(lambda: len(commands()) == 1, 60, "the send's first attempt")
        [first] = commands()
        lost = ToolDetail(tool="email@1", idempotency_mode="none", failure_class="unknown_outcome")
        send(topics.events, fact(first, ev.TOOL_FAILED, "adapters", error="read timeout", tool=lost))
        wait_for(lambda: any(f.event == ev.QUARANTINED for f in facts()), 60, "the case to open")
        [held] = [f for f in facts() if f.event == ev.QUARANTINED]
        case_id = held.quarantine.case_id if held.quarantine else ""

        new = {"to": "ada@example.com", "subject": "Hi again", "body": "Hello"}
        decide("c-edit", {"case_id": case_id, "decision": "edit", "input": new})
        decide("c-retry", {"case_id": case_id, "decision": "retry"})
        decide("c-fail", {"case_id": case_id, "decision": "fail"})
        wait_for(lambda: len(commands()) == 2, 60, "the retried attempt")
        again = commands()[1]
        done = CommitDetail(external_id="m1", committed_at=datetime.now(UTC))
        output = json.dumps({"message_id": "m1", "status": "sent", "to": "ada@example.com"})
        send(topics.events, fact(again, ev.STEP_COMMITTED, "ledger", output_json=output, commit=done))
        wait_for(lambda: any(f.event == ev.COMPLETED for f in facts()), 60, "the run to complete")

    seen = facts()
    kinds = [f.event for f in seen]
    assert kinds == [
        "created", "scheduled", "started", "quarantined",
        "decision_refused", "quarantine_resolved", "decision_refused", "completed",
    ]  # fmt: skip
    refused_edit, resolved, refused_fail = seen[4], seen[5], seen[6]
    assert "new_effect" in (refused_edit.error or "")
    assert resolved.quarantine is not None
    assert (resolved.quarantine.decision, resolved.quarantine.decided_by) == ("retry", "operator:ab12")
    assert json.loads(resolved.output_json or "")["key"] == first.idempotency_key
    assert "already decided: retry by operator:ab12 (command c-retry)" in (refused_fail.error or "")
    assert (again.attempt, again.idempotency_key, again.input_json) == (
        2, first.idempotency_key, first.input_json,
    )  # fmt: skip
