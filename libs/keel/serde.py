"""Avro serde in the Confluent wire format (magic byte + schema id) through confluent-kafka's serializers.

Schemas are registered on purpose (`register_contracts`, run by `make schemas` / `keel up`); the
serializers only look their schema up, so a producer can never register a schema by accident.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any, Protocol

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, dual_schema_id_deserializer
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from keel.contracts import RECORD_TYPES
from keel.schemas import TOPIC_ENVELOPES, schema_json, schema_text, subject_for
from keel.topics import TOOL_COMMANDS, WORKER_COMMANDS_PREFIX


class Contract(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


# Registries other than Confluent's have no /associations endpoint: name subjects by topic directly.
_SERDE_CONF = {"subject.name.strategy.type": "TOPIC"}


def registry_client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def register_contracts(client: SchemaRegistryClient, topics: dict[str, str] | None = None) -> dict[str, int]:
    """Register each topic's envelope under `<topic>-value`. Returns subject -> schema id."""
    ids = {}
    for topic, envelope in (topics or TOPIC_ENVELOPES).items():
        subject = subject_for(topic)
        ids[subject] = client.register_schema(subject, Schema(schema_text(envelope), "AVRO"))
    return ids


def register_worker_topics(client: SchemaRegistryClient, topics: list[str]) -> dict[str, int]:
    """Register the tool command envelope under each worker group's topic (`keel.tool-commands.GROUP`):
    done on purpose where the topic is made, since producers never register."""
    return register_contracts(client, {t: TOPIC_ENVELOPES[TOOL_COMMANDS] for t in topics})


class TrailingBytes(ValueError):
    """A value holds more than one Avro record: bytes were appended, or it was framed wrongly."""


class _Payloads(threading.local):
    """The body the deserializer read its record from, per thread, so `decode` can see what is left."""

    body: io.BytesIO | None = None


class Serde:
    """Encodes contract records for, and decodes them from, the topics they are the envelope of."""

    def __init__(self, client: SchemaRegistryClient, envelopes: dict[str, str] | None = None) -> None:
        self.client = client
        self.envelopes = dict(TOPIC_ENVELOPES if envelopes is None else envelopes)
        self._ser: dict[str, AvroSerializer] = {}
        self._de: dict[str, AvroDeserializer] = {}
        self._payloads = _Payloads()
        # The library's serializers redo per message what is fixed per topic and schema id (subject
        # lookup, schema expansion, rule and tag walks): about three quarters of their time. Once the
        # library has encoded (decoded) a topic's value (with a schema id) itself, looking the schema up
        # in the registry and checking it, the same Avro call is made directly with what it settled.
        self._writers: dict[str, tuple[bytes, Any]] = {}  # topic -> (wire prefix, parsed schema)
        self._readers: dict[tuple[str, int], tuple[Any, Any]] = {}  # (topic, id) -> (writer, reader|None)

    def _framing(self, data: bytes, ctx: SerializationContext | None, schema_id: Any) -> io.BytesIO:
        # The library's own framing (header or magic-byte prefix); we only keep the body it returns.
        body = dual_schema_id_deserializer(data, ctx, schema_id)
        self._payloads.body = body
        return body

    def envelope(self, topic: str) -> str:
        try:
            return self.envelopes[topic]
        except KeyError:
            if topic.startswith(WORKER_COMMANDS_PREFIX) and TOOL_COMMANDS in self.envelopes:
                return self.envelopes[TOOL_COMMANDS]  # a worker group's commands: the same contract
            raise KeyError(f"no Avro envelope is declared for topic {topic!r}") from None

    def encode(self, topic: str, record: Contract) -> bytes:
        known = self._writers.get(topic)
        if known is not None:
            out = io.BytesIO()
            out.write(known[0])
            fastavro.schemaless_writer(out, known[1], record.to_dict())
            return out.getvalue()
        data = self._encode_slow(topic, record)
        if data[:1] == b"\x00" and len(data) > 5:
            self._writers[topic] = (data[:5], fastavro.parse_schema(schema_json(self.envelope(topic))))
        return data

    def _encode_slow(self, topic: str, record: Contract) -> bytes:
        ser = self._ser.get(topic)
        if ser is None:
            conf = {"auto.register.schemas": False, **_SERDE_CONF}
            ser = self._ser[topic] = AvroSerializer(self.client, schema_text(self.envelope(topic)), conf=conf)
        data = ser(record.to_dict(), SerializationContext(topic, MessageField.VALUE))
        assert data is not None
        return data

    def decode(self, topic: str, data: bytes) -> Any:
        """Decode with the current contract as the reader schema (Avro resolution upgrades old writers).

        Strict: the value must be exactly one record. Avro readers stop at the record's end and ignore
        what follows, so bytes smuggled after a valid request would otherwise pass unseen."""
        envelope = self.envelope(topic)
        schema_id = int.from_bytes(data[1:5], "big") if data[:1] == b"\x00" and len(data) > 5 else None
        known = self._readers.get((topic, schema_id)) if schema_id is not None else None
        if known is None:
            value = self._decode_slow(topic, envelope, data)
            if schema_id is not None:
                self._remember_reader(topic, envelope, schema_id)
            return value
        body = io.BytesIO(data)
        body.seek(5)
        record = fastavro.schemaless_reader(body, known[0], known[1])
        if (left := len(data) - body.tell()) > 0:
            raise TrailingBytes(f"{left} trailing byte{'s' * (left > 1)} after the {envelope} record")
        return RECORD_TYPES[envelope].from_dict(record)  # type: ignore[attr-defined]

    def _remember_reader(self, topic: str, envelope: str, schema_id: int) -> None:
        # The registry client has the writer schema cached by now (the library just fetched it).
        writer = self.client.get_schema(schema_id, subject_for(topic))
        if writer.references or writer.schema_str is None:
            return  # named references: leave those to the library every time
        written, contract = json.loads(writer.schema_str), schema_json(envelope)
        # Resolution against a reader schema that is the writer's own is a no-op costing half the read.
        reader = None if written == contract else fastavro.parse_schema(contract)
        self._readers[(topic, schema_id)] = (fastavro.parse_schema(written), reader)

    def _decode_slow(self, topic: str, envelope: str, data: bytes) -> Any:
        de = self._de.get(topic)
        if de is None:
            conf = {**_SERDE_CONF, "schema.id.deserializer": self._framing}
            de = self._de[topic] = AvroDeserializer(self.client, schema_text(envelope), conf=conf)
        self._payloads.body = None
        value = de(data, SerializationContext(topic, MessageField.VALUE))
        body = self._payloads.body
        if body is not None and (left := len(body.getbuffer()) - body.tell()) > 0:
            raise TrailingBytes(f"{left} trailing byte{'s' * (left > 1)} after the {envelope} record")
        return RECORD_TYPES[envelope].from_dict(value)  # type: ignore[attr-defined]
