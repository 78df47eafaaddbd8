"""One run end to end through the topics, against the real broker and the simulated outside world."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from helpers import read_topic, unique, wait_for

from keel.contracts import RunRequested, StepCommand
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import LEDGER, RUN_REQUESTS, STEP_COMMANDS

pytestmark = pytest.mark.e2e
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


def submit(
    settings: Settings, workflow: str, data: dict, run_id: str | None = None, tenant: str = "acme"
) -> str:
    run_id = run_id or unique("run")
    req = RunRequested(
        request_id=unique("req"),
        run_id=run_id,
        tenant_id=tenant,
        workflow=workflow,
        input_json=json.dumps(data),
        requested_at=datetime.now(UTC),
    )
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(
        RUN_REQUESTS,
        key=run_id,
        value=Serde(registry_client(settings.schema_registry_url)).encode(RUN_REQUESTS, req),
    )
    assert producer.flush(10) == 0
    return run_id


def ledger_records(settings: Settings, key: str) -> list:
    serde = Serde(registry_client(settings.schema_registry_url))
    return [
        r
        for r in (serde.decode(LEDGER, m.value()) for m in read_topic(settings, LEDGER))
        if r.idempotency_key == key
    ]


def test_accept_then_timeout_on_send_retries_with_the_same_key_and_delivers_once(stack, sims, events):
    sims.fault("email", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "outbound_email", LEAD)
    assert events.wait_terminal(run_id) == "completed"

    sends = [e for e in events.of(run_id) if e.step == "send_email"]
    timeline = [(e.event, e.attempt) for e in sends]
    assert timeline[:3] == [("step_started", 1), ("tool_called", 1), ("tool_failed", 1)]
    failed = sends[2]
    assert failed.tool.failure_class == "unknown_outcome"
    retry = next(e for e in sends if e.event == "retry_scheduled")
    assert retry.retry.failure_class == "unknown_outcome" and retry.retry.next_attempt == 2
    succeeded = next(e for e in sends if e.event == "tool_succeeded")
    committed = next(e for e in sends if e.event == "step_committed")
    assert succeeded.attempt == 2 and committed.commit.external_id == succeeded.tool.external_id
    assert len({e.idempotency_key for e in sends if e.idempotency_key}) == 1  # one key for every attempt
    key = failed.idempotency_key

    email = sims.stats("email")  # ground truth: the provider's own delivery count
    assert email["deliveries"] == 1 and email["by_key"] == {key: 1}
    [record] = ledger_records(stack, key)
    assert record.external_id == committed.commit.external_id and record.run_id == run_id
    assert events.kinds(run_id)[-1] == "completed"


def test_a_repeated_run_id_is_never_a_second_run(stack, sims, events):
    run_id = submit(stack, "outbound_email", LEAD)
    assert events.wait_terminal(run_id) == "completed"
    submit(stack, "outbound_email", LEAD, run_id=run_id)
    other = submit(stack, "outbound_email", LEAD)  # a later run shows the duplicate was processed by then
    assert events.wait_terminal(other) == "completed"
    assert events.kinds(run_id).count("created") == 1
    assert sims.stats("email")["deliveries"] == 2  # one per run, none for the duplicate request


def test_fan_out_and_join(stack, sims, events):
    sims.fault("model", kind="latency", ms=400, times=2)  # long enough to see the two calls overlap
    data = {"lead_email": "ada@acme.test", "lead_name": "Ada", "company": "Acme"}
    run_id = submit(stack, "lead_enrichment", data)
    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    started = {e.step: e.ts for e in log if e.event == "step_started"}
    done = {e.step: e.ts for e in log if e.event == "step_committed"}
    research = ("research_company", "research_person")
    # Fan-out: both research steps were running before either was committed.
    assert max(started[s] for s in research) < min(done[s] for s in research)
    # Join: summarize started only once both were committed.
    assert started["summarize"] >= max(done[s] for s in research)
    assert [e.step for e in log if e.event == "completed"] == [None]
    assert sims.stats("crm")["deliveries"] == 1


def test_a_retried_step_whose_effect_is_committed_never_reaches_the_provider_again(stack, sims, events):
    run_id = submit(stack, "outbound_email", LEAD)
    assert events.wait_terminal(run_id) == "completed"
    original = next(e for e in events.of(run_id) if e.step == "send_email" and e.event == "step_started")
    requests_before = sims.stats("email")["requests"]

    # The same step again, as a redelivered or retried command would bring it: attempt 2, same input.
    retried = StepCommand(
        command_id=f"{run_id}/send_email/2",
        run_id=run_id,
        tenant_id="acme",
        workflow="outbound_email",
        workflow_version=1,
        step="send_email",
        kind="tool",
        attempt=2,
        input_json=original.input_json,
        idempotency_key=original.idempotency_key,
        issued_at=datetime.now(UTC),
    )
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(
        STEP_COMMANDS,
        key=run_id,
        value=Serde(registry_client(stack.schema_registry_url)).encode(STEP_COMMANDS, retried),
    )
    assert producer.flush(10) == 0

    wait_for(
        lambda: any(e.event == "tool_succeeded" and e.attempt == 2 for e in events.of(run_id)),
        30,
        "the retried attempt's result",
    )
    sends = [e for e in events.of(run_id) if e.step == "send_email" and e.event == "tool_succeeded"]
    first, again = sends
    assert again.tool.already_committed and again.tool.external_id == first.tool.external_id
    assert not any(e.event == "tool_called" and e.attempt == 2 for e in events.of(run_id))
    assert sims.stats("email")["requests"] == requests_before  # the provider was not called at all
    assert sims.stats("email")["deliveries"] == 1
    assert len(ledger_records(stack, original.idempotency_key)) == 1
    # The ledger answers the retry with the commit it holds (re-issued, marked duplicate), never a new one.
    wait_for(
        lambda: any(e.event == "step_committed" and e.attempt == 2 for e in events.of(run_id)),
        30,
        "the commit to be re-issued for the retried attempt",
    )
    commits = [e for e in events.of(run_id) if e.event == "step_committed" and e.step == "send_email"]
    assert [(e.attempt, e.commit.duplicate) for e in commits] == [(1, False), (2, True)]
    assert commits[1].commit.external_id == commits[0].commit.external_id
    assert len(ledger_records(stack, original.idempotency_key)) == 1
