"""The serde's direct Avro calls (after the library settled a topic's schema) against the real registry:
the same bytes as the library's serializer, and the same records back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from keel.contracts import RunEvent
from keel.schemas import schema_text
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS

pytestmark = pytest.mark.integration


def _event(i: int) -> RunEvent:
    return RunEvent(
        event_id=f"e-{i}",
        run_id=f"run-{i}",
        tenant_id="acme",
        workflow="outbound_email",
        event="step_committed",
        ts=datetime(2026, 3, 9, 12, 0, i, tzinfo=UTC),
        source="ledger",
        step="send_email",
        attempt=i,
        output_json='{"id": "msg_1"}',
    )


def test_every_value_is_encoded_as_the_library_encodes_it_and_decodes_back(stack: Settings):
    client = registry_client(stack.schema_registry_url)
    library = AvroSerializer(
        client,
        schema_text("run_event"),
        conf={"auto.register.schemas": False, "subject.name.strategy.type": "TOPIC"},
    )
    serde = Serde(client)
    for i in range(3):
        expected = library(_event(i).to_dict(), SerializationContext(RUN_EVENTS, MessageField.VALUE))
        data = serde.encode(RUN_EVENTS, _event(i))
        assert data == expected
        assert serde.decode(RUN_EVENTS, data) == _event(i)
    assert serde._writers and serde._readers, "the later values should skip the library"
