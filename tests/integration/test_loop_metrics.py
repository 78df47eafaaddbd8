"""The transactional loop's metrics against the real broker: aborts, dead letters and facts, each counted
once, and only once its transaction committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from echo import envelopes, make_loop
from helpers import make_topics, read_topic, unique, wait_for
from prometheus_client import REGISTRY

from keel.contracts import RunRequested
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(stack: Settings) -> Iterator[tuple[str, str, str, str, str]]:
    in_t, out_t, dlq = unique("test.in"), unique("test.out"), unique("test.dlq")
    make_topics(stack, in_t, out_t, dlq)
    register_contracts(registry_client(stack.schema_registry_url), envelopes(in_t, out_t, dlq))
    yield in_t, out_t, dlq, unique("group"), unique("txid")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_aborted_batch_counts_one_abort_and_its_facts_once(stack, topics):
    in_t, out_t, dlq, group, txid = topics
    serde = Serde(registry_client(stack.schema_registry_url), envelopes(in_t, out_t, dlq))
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    runs = [unique("run") for _ in range(4)]
    for run_id, workflow in [*((r, "wf") for r in runs), (unique("run"), "reject-me")]:
        req = RunRequested(
            request_id=f"req-{run_id}",
            run_id=run_id,
            tenant_id="acme",
            workflow=workflow,
            requested_at=datetime.now(UTC),
        )
        producer.produce(in_t, key=run_id, value=serde.encode(in_t, req))
    producer.produce(in_t, key=b"poison", value=b"\x00not avro")
    assert producer.flush(10) == 0
    injected = KafkaError(KafkaError._STATE, "injected commit failure", txn_requires_abort=True)
    failures = [KafkaException(injected)]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    loop = make_loop(stack, in_t, out_t, dlq, group, txid, before_commit=fail_once)
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: len(read_topic(stack, dlq)) == 2, 30, "both dead letters")
        wait_for(lambda: len(read_topic(stack, out_t)) == 4, 30, "the facts")
        wait_for(lambda: value("keel_run_events_total", service=group, event="created") == 4, 10, "the count")
    finally:
        loop.stop()
        runner.join(20)
    assert loop.aborted_batches == 1
    assert value("keel_transaction_aborts_total", service=group) == 1
    assert value("keel_transactions_total", service=group) == loop.committed_batches
    # The aborted batch's facts and letters were staged once before the abort: counted after the commit only.
    assert value("keel_run_events_total", service=group, event="created") == 4
    assert value("keel_dead_letters_total", service=group, topic=in_t, error_class="unknown_workflow") == 1
    assert value("keel_dead_letters_total", service=group, topic=in_t, error_class="undecodable") == 1
