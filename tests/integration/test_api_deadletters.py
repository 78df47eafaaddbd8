"""Operators' dead-letter endpoints against the real topics: current answers, and fast ones."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import apistack
import pytest
from apistack import ACME, Api
from confluent_kafka import Producer
from helpers import make_topics, unique

from keel.contracts import DeadLetter
from keel.serde import Serde, registry_client
from keel.topics import DEAD_LETTERS

pytestmark = pytest.mark.integration
api = apistack.api  # the fixture
OPS = {"Authorization": "Bearer ops-dev-key"}
# Each call used to re-read both topics from their beginning: over a second even with both empty, and
# more with every letter. An incremental index answers in tens of milliseconds; the bound leaves room
# for a loaded machine (0.51 s was seen with the suite sharing two cores) while a re-read stays above it.
FAST_S = 1.0


def dead_letter(api: Api) -> str:
    """A dead letter of a message on a topic of this test's own (so a redrive lands there)."""
    source = unique("test.dlq-source")
    make_topics(api.settings, source)
    producer = Producer({"bootstrap.servers": api.settings.kafka_bootstrap})
    producer.produce(source, key=b"k", value=b"not avro")
    producer.flush(10)
    letter = DeadLetter(
        dead_letter_id=f"{source}:0:0",
        source_topic=source,
        source_partition=0,
        source_offset=0,
        key=b"k",
        value=b"not avro",
        reason="undecodable",
        error_class="decode",
        failed_at=datetime.now(UTC),
    )
    serde = Serde(registry_client(api.settings.schema_registry_url))
    producer.produce(DEAD_LETTERS, key=letter.dead_letter_id, value=serde.encode(DEAD_LETTERS, letter))
    assert producer.flush(10) == 0
    return letter.dead_letter_id


def timed(call):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    reply = call()
    return reply, time.monotonic() - start


def test_dead_letter_calls_see_every_change_before_them_and_are_fast(api):
    client = api.client
    assert client.get("/v1/dead-letters", headers=OPS).status_code == 200  # the index is built once
    letter_id = dead_letter(api)
    took = []

    listing, t = timed(lambda: client.get("/v1/dead-letters", headers=OPS))
    took.append(t)
    assert letter_id in [x["dead_letter_id"] for x in listing.json()["dead_letters"]]
    shown, t = timed(lambda: client.get(f"/v1/dead-letters/{letter_id}", headers=OPS))
    took.append(t)
    assert (shown.json()["reason"], shown.json()["redriven"]) == ("undecodable", False)
    redriven, t = timed(lambda: client.post(f"/v1/dead-letters/{letter_id}/redrive", headers=OPS))
    assert redriven.status_code == 200 and redriven.json()["to"].startswith(
        f"{shown.json()['source_topic']}:0:"
    )
    again, t = timed(lambda: client.post(f"/v1/dead-letters/{letter_id}/redrive", headers=OPS))
    took.append(t)
    assert again.status_code == 409  # its own redrive is seen by the next call
    waiting, t = timed(lambda: client.get("/v1/dead-letters", headers=OPS))
    took.append(t)
    assert letter_id not in [x["dead_letter_id"] for x in waiting.json()["dead_letters"]]
    everything = client.get("/v1/dead-letters?all=true", headers=OPS).json()["dead_letters"]
    assert next(x for x in everything if x["dead_letter_id"] == letter_id)["redriven"] is True
    assert max(took) < FAST_S, took


def test_tenants_keys_are_forbidden_and_unknown_keys_unauthenticated(api):
    assert api.client.get("/v1/dead-letters", headers=ACME).status_code == 403
    assert api.client.get("/v1/dead-letters", headers={"Authorization": "Bearer nope"}).status_code == 401
