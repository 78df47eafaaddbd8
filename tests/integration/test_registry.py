"""The registry against the real broker: Confluent clients work with it, its state survives restarts."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from helpers import make_topics, read_topic, unique

from keel.contracts import RunEvent, ToolDetail
from keel.serde import Serde, registry_client
from keel_ops.stack import Background, http_ok, start_background, stop_background

pytestmark = pytest.mark.integration


def test_a_plain_confluent_deserializer_decodes_our_topic(stack):
    event = RunEvent(
        event_id=unique("ev"),
        run_id=unique("run"),
        tenant_id="acme",
        workflow="outbound_email",
        event="tool_called",
        ts=datetime.now(UTC).replace(microsecond=0),
        attempt=1,
        source="test",
        tool=ToolDetail(tool="email@1", idempotency_mode="provider_key"),
    )
    topic = "keel.run-events"
    data = Serde(registry_client(stack.schema_registry_url)).encode(topic, event)
    assert data[0] == 0  # Confluent wire format: magic byte, then the 4-byte schema id
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    producer.produce(topic, key=event.run_id, value=data)
    producer.flush(10)

    # Exactly what any Confluent user would write: default configuration, no reader schema.
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": stack.schema_registry_url}))
    found = [m for m in read_topic(stack, topic) if m.key() == event.run_id.encode()]
    assert len(found) == 1
    decoded = deserializer(found[0].value(), SerializationContext(topic, MessageField.VALUE))
    assert decoded["run_id"] == event.run_id and decoded["tool"]["tool"] == "email@1"
    assert decoded["ts"] == event.ts


def test_registration_is_checked_durable_and_replayed_by_a_new_instance(stack):
    client = SchemaRegistryClient({"url": stack.schema_registry_url})
    subject = unique("test.subject") + "-value"
    v1 = {"type": "record", "name": "Thing", "fields": [{"name": "a", "type": "string", "doc": "a"}]}
    v2 = {**v1, "fields": v1["fields"] + [{"name": "b", "type": ["null", "long"], "default": None}]}
    bad = {**v1, "fields": [{"name": "a", "type": "long"}]}
    id1 = client.register_schema(subject, Schema(json.dumps(v1), "AVRO"))
    id2 = client.register_schema(subject, Schema(json.dumps(v2), "AVRO"))
    assert id1 != id2
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema(json.dumps(bad), "AVRO"))
    assert err.value.http_status_code == 409

    # A second registry process replays the compacted topic and knows everything the first one stored.
    port = 18090
    replica = Background(
        "registry-replica",
        [sys.executable, "-m", "services.registry", "--port", str(port)],
        ready=http_ok(f"http://127.0.0.1:{port}/subjects"),
    )
    start_background(stack, replica)
    try:
        latest = httpx.get(f"http://127.0.0.1:{port}/subjects/{subject}/versions/latest").json()
        assert (latest["version"], latest["id"]) == (2, id2)
        missing = httpx.get(f"http://127.0.0.1:{port}/subjects/{unique('nope')}/versions")
        assert missing.status_code == 404 and missing.json()["error_code"] == 40401
    finally:
        stop_background(stack, "registry-replica")


def test_producers_never_auto_register(stack):
    topic = unique("test.unregistered")
    make_topics(stack, topic)
    serde = Serde(registry_client(stack.schema_registry_url), {topic: "run_event"})
    event = RunEvent(
        event_id="e", run_id="r", tenant_id="t", workflow="w", event="created", ts=datetime.now(UTC)
    )
    with pytest.raises(SchemaRegistryError) as err:
        serde.encode(topic, event)
    assert err.value.http_status_code == 404
    assert topic + "-value" not in SchemaRegistryClient({"url": stack.schema_registry_url}).get_subjects()


def test_unknown_routes_answer_in_confluent_error_shape(stack):
    reply = httpx.get(f"{stack.schema_registry_url}/no/such/route")
    assert reply.status_code == 404 and reply.json()["error_code"] == 40401
