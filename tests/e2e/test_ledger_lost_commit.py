"""A step_committed the scheduler never took in is re-issued by the ledger: the run completes on its retry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import read_topic, unique, wait_for
from test_runs import ledger_records, submit

from keel import events as ev
from keel.contracts import RunEvent, ToolDetail
from keel.idempotency import idempotency_key
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS

pytestmark = pytest.mark.e2e
MAIL = {"to": "ada@example.com", "subject": "Hello"}
PAYLOAD = {**MAIL, "body": "Hello from the failure tests."}  # quick_send's rendered send input


def scheduler_past(settings: Settings, run_id: str) -> None:
    """Wait until the scheduler has consumed (and committed) every run event of `run_id` so far."""
    last: dict[int, int] = {}
    for m in read_topic(settings, RUN_EVENTS):
        if m.key() == run_id.encode():
            last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "keel-scheduler"})
    try:
        wait_for(
            lambda: all(
                tp.offset > last[tp.partition]
                for tp in probe.committed([TopicPartition(RUN_EVENTS, p) for p in last], 10)
            ),
            30,
            "the scheduler to consume the run's events so far",
        )
    finally:
        probe.close()


def test_a_commit_the_scheduler_never_saw_is_reissued_and_the_run_completes(stack, sims, events):
    run_id = unique("lost")
    key = idempotency_key("acme", "quick_send", run_id, "send", PAYLOAD)
    # The step's effect is committed (ledger record + step_committed) while the scheduler cannot take the
    # commit in: it does not know the run yet, just as it skips a step_committed it had to dead-letter.
    done = RunEvent(
        event_id=f"{run_id}:send:1:tool_succeeded",
        run_id=run_id,
        tenant_id="acme",
        workflow="quick_send",
        workflow_version=1,
        step="send",
        event=ev.TOOL_SUCCEEDED,
        ts=datetime.now(UTC),
        attempt=1,
        idempotency_key=key,
        source="adapters",
        output_json=json.dumps({"message_id": "msg_earlier"}),
        tool=ToolDetail(tool="email@1", idempotency_mode="provider_key", external_id="msg_earlier"),
    )
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "partitioner": "murmur2_random"})
    serde = Serde(registry_client(stack.schema_registry_url))
    producer.produce(RUN_EVENTS, key=run_id, value=serde.encode(RUN_EVENTS, done))
    assert producer.flush(10) == 0
    wait_for(lambda: "step_committed" in events.kinds(run_id), 20, "the ledger to commit the key")
    wait_for(lambda: len(ledger_records(stack, key)) == 1, 20, "the ledger record")
    scheduler_past(stack, run_id)  # the first step_committed is behind the scheduler, unapplied

    submit(stack, "quick_send", MAIL, run_id=run_id)
    assert events.wait_terminal(run_id, 60) == "completed"

    commits = [e for e in events.of(run_id) if e.event == "step_committed"]
    original, reissued = commits[0], commits[-1]
    assert not original.commit.duplicate
    assert reissued.commit.duplicate and reissued.commit.external_id == "msg_earlier"
    assert reissued.event_id != original.event_id
    [record] = ledger_records(stack, key)  # never a second record for the key
    assert record.external_id == "msg_earlier"
    assert sims.stats("email")["by_key"].get(key, 0) <= 1  # a lagging ledger view may let one call through
