"""A unique run-event topic for the tracer's tests, and a producer of run events onto it."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from helpers import make_topics, unique

from keel.contracts import RunEvent
from keel.schemas import TOPIC_ENVELOPES
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS

PARTITIONS = 2


@pytest.fixture
def events_topic(stack: Settings) -> tuple[str, Serde]:
    topic = unique("test.tracer-events")
    make_topics(stack, topic, partitions=PARTITIONS)
    client = registry_client(stack.schema_registry_url)
    register_contracts(client, {topic: TOPIC_ENVELOPES[RUN_EVENTS]})
    return topic, Serde(client, {topic: TOPIC_ENVELOPES[RUN_EVENTS]})


def produce(settings: Settings, topic: str, serde: Serde, events: list[RunEvent]) -> dict[int, int]:
    """The events keyed by run, then one message that is no run event; per partition, the offset of the
    first run event written there."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    first: dict[int, int] = {}

    def delivered(err: object, msg: object) -> None:
        if err is None:
            first.setdefault(msg.partition(), msg.offset())  # type: ignore[attr-defined]

    for e in events:
        producer.produce(topic, key=e.run_id, value=serde.encode(topic, e), on_delivery=delivered)
    producer.produce(topic, key=b"poison", value=b"not avro at all")  # skipped, never fatal
    assert producer.flush(10) == 0
    return first
