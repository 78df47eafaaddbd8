"""A run request keyed by something else than its run_id: the run still executes once, on its own partition,
and a restart of the scheduler never revives it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from harness import kill_and_restart
from helpers import read_topic, unique
from scheduler_kit import key_on
from test_runs import LEAD, submit

from keel.contracts import RunRequested
from keel.partitioner import partition_for
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_REQUESTS, SCHEDULER_STATE

pytestmark = pytest.mark.e2e


def publish_foreign(settings: Settings, run_id: str, *, key: str | None, partition: int | None) -> None:
    """As a service that publishes run requests might: keyed by its own request id, or with no key and
    librdkafka's default partitioner."""
    req = RunRequested(
        request_id=unique("req"),
        run_id=run_id,
        tenant_id="acme",
        workflow="outbound_email",
        input_json=json.dumps(LEAD),
        requested_at=datetime.now(UTC),
    )
    conf = {"bootstrap.servers": settings.kafka_bootstrap}
    if key is not None:  # Java's partitioner, as the run's own events use; no key: librdkafka's default
        conf["partitioner"] = "murmur2_random"
    producer = Producer(conf)
    value = Serde(registry_client(settings.schema_registry_url)).encode(RUN_REQUESTS, req)
    if partition is None:
        producer.produce(RUN_REQUESTS, key=key, value=value)
    else:
        producer.produce(RUN_REQUESTS, key=key, value=value, partition=partition)
    assert producer.flush(10) == 0


def state_copies(settings: Settings, run_id: str) -> dict[int, dict | None]:
    """The run's latest changelog entry on each partition of the scheduler's state (None: tombstoned)."""
    copies: dict[int, dict | None] = {}
    for msg in read_topic(settings, SCHEDULER_STATE, timeout=30):
        if (msg.key() or b"").decode() == run_id:
            copies[msg.partition()] = json.loads(msg.value()) if msg.value() is not None else None
    return {p: v for p, v in copies.items() if v is not None}


@pytest.mark.parametrize("keyed", ["by_request_id", "no_key"])
def test_a_request_keyed_otherwise_runs_once_on_its_own_partition_and_is_never_revived(
    stack, sims, events, keyed
):
    partitions = stack.topic_partitions
    run_id = unique("foreign")
    owner = partition_for(run_id, partitions)
    elsewhere = (owner + 1) % partitions
    if keyed == "by_request_id":
        publish_foreign(stack, run_id, key=key_on(elsewhere, partitions, run_id), partition=None)
    else:  # no key: the default partitioner picks any partition; here, for sure, not the run's
        publish_foreign(stack, run_id, key=None, partition=elsewhere)

    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    assert [e.event for e in log].count("created") == 1
    assert [(e.step, e.attempt) for e in log if e.event == "step_started"] == [
        ("draft_email", 1),
        ("log_to_crm", 1),
        ("send_email", 1),
    ]
    copies = state_copies(stack, run_id)
    assert list(copies) == [owner], f"the run's state is split over partitions {sorted(copies)}"
    assert copies[owner]["status"] == "completed"

    kill_and_restart(stack, "scheduler")
    canary = submit(stack, "outbound_email", LEAD)  # once it is done, the restored state has had its turn
    assert events.wait_terminal(canary, 90) == "completed"
    assert events.of(run_id) == log, "the ended run was revived after the restart"
    assert [e.event for e in log].count("model_called") == 1  # its draft was paid for once
    [key] = {e.idempotency_key for e in log if e.step == "send_email" and e.idempotency_key}
    assert sims.stats("email")["by_key"].get(key) == 1  # and its email delivered once
