"""The Avro contracts: generated types up to date, every released version readable both ways, docs."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from keel.contracts import RECORD_TYPES
from keel.schemas import schema_json, schema_names
from keel_ops import codegen
from keel_ops.schema_release import read_samples, released_schema, unreleased, versions
from services.registry.core import compatible

NAMES = schema_names()
SEED_FIELDS = [
    "event_id",
    "run_id",
    "task_id",
    "agent_id",
    "tenant_id",
    "workflow",
    "step",
    "event",
    "ts",
    "attempt",
    "idempotency_key",
    "model",
    "cost_usd_est",
    "input_ref",
    "output_ref",
    "error",
]


def test_generated_types_are_up_to_date():
    assert codegen.OUT.read_text() == codegen.render(), "run `python -m keel_ops.codegen`"


def test_every_contract_change_is_released():
    assert unreleased() == [], "changed contracts need a golden version: run `make schema-release`"


@pytest.mark.parametrize("name", NAMES)
def test_samples_of_every_released_version_decode_with_the_current_reader(name):
    current = schema_json(name)
    for version in versions(name):
        records = read_samples(name, version, current)
        assert records, f"{name} v{version} has no samples"
        for record in records:
            RECORD_TYPES[name].from_dict(record)  # the derived Python type accepts them too


@pytest.mark.parametrize("name", NAMES)
def test_current_data_decodes_with_every_released_reader(name):
    current = fastavro.parse_schema(schema_json(name))
    latest = read_samples(name, versions(name)[-1], schema_json(name))
    for version in versions(name):
        old_reader = fastavro.parse_schema(released_schema(name, version))
        for record in latest:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, current, record)
            buf.seek(0)
            assert fastavro.schemaless_reader(buf, current, old_reader) is not None


@pytest.mark.parametrize("name", NAMES)
def test_versions_are_full_transitive_compatible(name):
    import json

    texts = [json.dumps(released_schema(name, v)) for v in versions(name)] + [json.dumps(schema_json(name))]
    for old in texts:
        assert compatible(texts[-1], old) and compatible(old, texts[-1])


def _fields(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in schema["fields"]:
        out.append((f"{schema['name']}.{f['name']}", f))
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        for t in types:
            if isinstance(t, dict) and t.get("type") == "record":
                out += _fields(t)
            if isinstance(t, dict) and t.get("type") == "array" and isinstance(t["items"], dict):
                out += _fields(t["items"])
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_record_and_field_is_documented(name):
    schema = schema_json(name)
    assert schema.get("doc")
    undocumented = [path for path, f in _fields(schema) if not f.get("doc")]
    assert undocumented == []


def test_run_event_envelope_carries_the_seed_record_and_optional_details():
    schema = schema_json("run_event")
    fields = {f["name"]: f for f in schema["fields"]}
    assert [f for f in SEED_FIELDS if f not in fields] == []
    assert fields["event"]["type"] == "string"  # old readers skip kinds they do not know
    for name in ("workflow_version", "source", "trace_id", "span_id"):
        assert name in fields
    details = [
        f
        for f in schema["fields"]
        if isinstance(f["type"], list)
        and any(isinstance(t, dict) and t.get("type") == "record" for t in f["type"])
    ]
    assert len(details) >= 6
    assert all(f["type"][0] == "null" and f["default"] is None for f in details)
