"""The Avro serde at the wire boundary: a value decodes only when the whole of it is one record."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from datetime import UTC, datetime

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

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


def test_an_older_writer_schema_is_resolved_to_the_contract_after_the_first_value_too():
    """A value written with an older schema (without `trace_id`) reads with the field's default, on the
    library's path and on the direct one after it; the current schema's values read alongside."""
    client = SchemaRegistryClient.new_client({"url": "mock://serde-older-writer"})
    older = schema_json("run_request")
    older["fields"] = [f for f in older["fields"] if f["name"] != "trace_id"]
    old_id = client.register_schema("keel.run-requests-value", Schema(json.dumps(older), "AVRO"))
    [new_id] = register_contracts(client, {RUN_REQUESTS: "run_request"}).values()
    assert old_id != new_id
    serde = Serde(client)
    traced = dataclasses.replace(REQUEST, trace_id="t-1")

    def written(schema: dict, schema_id: int, record: RunRequested) -> bytes:
        out = io.BytesIO()
        fields = {f["name"] for f in schema["fields"]}
        fastavro.schemaless_writer(
            out, fastavro.parse_schema(schema), {k: v for k, v in record.to_dict().items() if k in fields}
        )
        return b"\x00" + struct.pack(">I", schema_id) + out.getvalue()

    for _ in range(2):  # the library's path, then the direct one
        assert serde.decode(RUN_REQUESTS, written(older, old_id, traced)) == REQUEST  # trace_id: default
        assert serde.decode(RUN_REQUESTS, written(schema_json("run_request"), new_id, traced)) == traced
    assert serde._readers[(RUN_REQUESTS, old_id)][1] is not None  # resolved against the contract
    assert serde._readers[(RUN_REQUESTS, new_id)][1] is None  # its own schema: nothing to resolve
