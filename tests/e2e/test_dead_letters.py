"""Bad input on keel.run-requests: each kind gets a dead letter with a clear reason; redrives keep history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest
from confluent_kafka import Producer
from helpers import read_topic, unique, wait_for

from keel import dlq
from keel.contracts import RunRequested
from keel.serde import Serde, registry_client
from keel.topics import DEAD_LETTERS, RUN_REQUESTS

pytestmark = pytest.mark.e2e
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


def produce(stack, key: str, value: bytes) -> tuple[int, int]:
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "partitioner": "murmur2_random"})
    where: list = []
    producer.produce(
        RUN_REQUESTS, key=key, value=value, on_delivery=lambda e, m: where.append((m.partition(), m.offset()))
    )
    assert producer.flush(10) == 0
    return where[0]


def letters_by_origin(stack, serde) -> dict:
    return {
        (x.source_partition, x.source_offset): x
        for x in (serde.decode(DEAD_LETTERS, m.value()) for m in read_topic(stack, DEAD_LETTERS))
        if x.source_topic == RUN_REQUESTS
    }


def request(workflow: str, data: object) -> RunRequested:
    return RunRequested(
        request_id=unique("req"),
        run_id=unique("run"),
        tenant_id="acme",
        workflow=workflow,
        input_json=json.dumps(data),
        requested_at=datetime.now(UTC),
    )


def test_each_bad_request_gets_a_dead_letter_and_a_redrive_that_fails_again_keeps_its_history(stack, keel):
    serde = Serde(registry_client(stack.schema_registry_url))
    # Keyed by run id, as Keel's producers do: a request keyed otherwise would first be re-routed to its
    # run's partition, and dead-lettered there (tests/e2e/test_scheduler_ownership.py).
    unknown = request("no_such_workflow", LEAD)
    invalid = request("outbound_email", {"x": 1})
    oversized = request("outbound_email", {**LEAD, "product": "x" * 300_000})
    bad = {
        "undecodable": produce(stack, "k1", b"\x00\x00\x00\x00\x01not avro"),
        "unknown_workflow": produce(stack, unknown.run_id, serde.encode(RUN_REQUESTS, unknown)),
        "invalid_input": produce(stack, invalid.run_id, serde.encode(RUN_REQUESTS, invalid)),
        "oversized": produce(stack, oversized.run_id, serde.encode(RUN_REQUESTS, oversized)),
    }
    wait_for(lambda: set(bad.values()) <= set(letters_by_origin(stack, serde)), 30, "four dead letters")
    letters = letters_by_origin(stack, serde)
    for error_class, origin in bad.items():
        letter = letters[origin]
        assert letter.error_class == error_class and letter.consumer_group == "keel-scheduler"
    assert "no_such_workflow" in letters[bad["unknown_workflow"]].reason
    assert "missing" in letters[bad["invalid_input"]].reason
    assert "blob store" in letters[bad["oversized"]].reason
    assert letters[bad["undecodable"]].value == b"\x00\x00\x00\x00\x01not avro"  # original bytes kept

    first = letters[bad["unknown_workflow"]]
    status = dlq.redrive(stack, first, "cli:tests")
    partition, offset = map(int, status["to"].split(":")[-2:])
    wait_for(
        lambda: (partition, offset) in letters_by_origin(stack, serde),
        30,
        "the redriven message to fail again",
    )
    again = letters_by_origin(stack, serde)[(partition, offset)]
    assert again.error_class == "unknown_workflow"
    assert len(again.history) == 1 and again.history[0].startswith(first.dead_letter_id)

    listing = subprocess.run(
        [sys.executable, "-m", "keel_ops.cli", "dlq", "list", "--all"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if ln.startswith(first.dead_letter_id))
    assert "redriven" in line


def test_operators_work_dead_letters_over_the_api_and_tenants_cannot(stack, keel):
    from harness import E2E_ENV

    url, ops = E2E_ENV["KEEL_API_URL"], {"Authorization": "Bearer ops-dev-key"}
    serde = Serde(registry_client(stack.schema_registry_url))
    unknown = request("no_such_workflow", LEAD)
    origin = produce(stack, unknown.run_id, serde.encode(RUN_REQUESTS, unknown))
    wait_for(lambda: origin in letters_by_origin(stack, serde), 30, "the dead letter")
    letter_id = letters_by_origin(stack, serde)[origin].dead_letter_id

    tenant = httpx.get(f"{url}/v1/dead-letters", headers={"Authorization": "Bearer acme-dev-key"})
    assert tenant.status_code == 403  # dead letters cross tenants: operators only
    assert httpx.get(f"{url}/v1/dead-letters").status_code == 401
    listed = httpx.get(f"{url}/v1/dead-letters", headers=ops).json()["dead_letters"]
    assert letter_id in [x["dead_letter_id"] for x in listed]
    detail = httpx.get(f"{url}/v1/dead-letters/{letter_id}", headers=ops).json()
    assert detail["error_class"] == "unknown_workflow" and detail["source_offset"] == origin[1]
    assert httpx.get(f"{url}/v1/dead-letters/no:0:0", headers=ops).status_code == 404
    redriven = httpx.post(f"{url}/v1/dead-letters/{letter_id}/redrive", headers=ops)
    assert redriven.status_code == 200 and redriven.json()["status"] == "redriven"
    assert httpx.post(f"{url}/v1/dead-letters/{letter_id}/redrive", headers=ops).status_code == 409
    waiting = httpx.get(f"{url}/v1/dead-letters", headers=ops).json()["dead_letters"]
    assert letter_id not in [x["dead_letter_id"] for x in waiting]
