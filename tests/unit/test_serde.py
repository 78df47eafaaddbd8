"""The Avro serde at the wire boundary: a value decodes only when the whole of it is one record."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from keel.contracts import RunRequested
from keel.schemas import schema_json
from keel.serde import Serde, register_contracts
from keel.topics import RUN_REQUESTS

REQUEST = RunRequested(
    request_id="req-1",
    run_id="run-1",
    tenant_id="acme",
    workflow="outbound_email",
    input_json='{"lead_email": "a@b.test"}',
    requested_at=datetime(2026, 3, 9, 12, 0, tzinfo=UTC),
)


class Wire:
    """A serde on the client library's in-memory registry, and the bytes a producer would write."""

    def __init__(self) -> None:
        client = SchemaRegistryClient.new_client({"url": "mock://serde-unit"})
        [self.schema_id] = register_contracts(client, {RUN_REQUESTS: "run_request"}).values()
        self.serde = Serde(client)

    def bytes_of(self, record: RunRequested) -> bytes:
        """The Confluent wire format written by hand: magic byte, schema id, one Avro record."""
        out = io.BytesIO()
        fastavro.schemaless_writer(out, fastavro.parse_schema(schema_json("run_request")), record.to_dict())
        return b"\x00" + struct.pack(">I", self.schema_id) + out.getvalue()


@pytest.fixture
def wire() -> Wire:
    return Wire()


def test_a_whole_record_round_trips(wire):
    assert wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST)) == REQUEST


@pytest.mark.parametrize("tail", [b"\x00", b"trailing bytes after the record"])
def test_trailing_bytes_after_the_record_are_refused(wire, tail):
    with pytest.raises(ValueError, match=f"{len(tail)} trailing byte"):
        wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST) + tail)


def test_a_truncated_record_is_refused(wire):
    with pytest.raises(Exception):  # noqa: B017 - fastavro's own error for a short read
        wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST)[:-3])


# The serde settles a topic's schema once through the library, then makes the Avro call directly:
# every rule above must hold the second time round too.
def test_after_the_first_value_the_same_bytes_decode_to_the_same_record(wire):
    first = wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST))
    assert wire.serde._readers, "the second decode should not go through the library again"
    assert wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST)) == first == REQUEST


def test_trailing_and_truncated_values_are_refused_after_the_first_value_too(wire):
    wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST))
    with pytest.raises(ValueError, match="1 trailing byte"):
        wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST) + b"\x00")
    with pytest.raises(Exception):  # noqa: B017 - fastavro's own error for a short read
        wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST)[:-3])


def test_an_unknown_schema_id_is_still_refused_after_the_first_value(wire):
    wire.serde.decode(RUN_REQUESTS, wire.bytes_of(REQUEST))
    other = b"\x00" + struct.pack(">I", wire.schema_id + 1000) + wire.bytes_of(REQUEST)[5:]
    with pytest.raises(Exception, match="(?i)not found|40403|schema"):
        wire.serde.decode(RUN_REQUESTS, other)
