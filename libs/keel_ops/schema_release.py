"""Releases the contracts: `python -m keel_ops.schema_release` snapshots each changed schema as a new version.

tests/golden/schemas/<contract>/v<N>.avsc is released version N; v<N>.samples.json holds sample records
in Avro's JSON encoding. A new version's samples start as the previous version's samples read through
the new schema (Avro resolution fills new fields with their defaults); edit them to exercise new fields.
Released files are never edited: the compatibility test encodes and decodes every version both ways.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import fastavro

from keel.schemas import REPO_ROOT, schema_json, schema_names, schema_text

GOLDEN = REPO_ROOT / "tests" / "golden" / "schemas"


def canonical(schema: str | dict[str, Any]) -> str:
    value = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def versions(name: str) -> list[int]:
    return sorted(int(p.stem[1:]) for p in (GOLDEN / name).glob("v*.avsc"))


def released_schema(name: str, version: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / name / f"v{version}.avsc").read_text())
    return data


def read_samples(name: str, version: int, reader: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Samples of a released version, decoded with their writer schema and, if given, resolved to `reader`."""
    writer = fastavro.parse_schema(released_schema(name, version))
    with (GOLDEN / name / f"v{version}.samples.json").open() as fo:
        records: list[dict[str, Any]] = list(fastavro.json_reader(fo, writer))  # type: ignore[arg-type]
    if reader is None:
        return records
    parsed_reader = fastavro.parse_schema(reader)
    out: list[dict[str, Any]] = []
    for record in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        out.append(fastavro.schemaless_reader(buf, writer, parsed_reader))  # type: ignore[arg-type]
    return out


def write_samples(path: Path, schema: dict[str, Any], records: list[dict[str, Any]]) -> None:
    with path.open("w") as fo:
        fastavro.json_writer(fo, fastavro.parse_schema(schema), records)


def unreleased() -> list[str]:
    """Contracts whose current text differs from their newest released version (or that have none)."""
    out = []
    for name in schema_names():
        vs = versions(name)
        if not vs or canonical(released_schema(name, vs[-1])) != canonical(schema_text(name)):
            out.append(name)
    return out


def release() -> list[str]:
    done = []
    for name in unreleased():
        vs = versions(name)
        if not vs:
            raise SystemExit(
                f"{name} has no released version: write tests/golden/schemas/{name}/v1.avsc "
                "and v1.samples.json by hand first"
            )
        new = len(vs) + 1
        current = schema_json(name)
        (GOLDEN / name / f"v{new}.avsc").write_text(schema_text(name))
        write_samples(GOLDEN / name / f"v{new}.samples.json", current, read_samples(name, vs[-1], current))
        done.append(f"{name} v{new}")
    return done


if __name__ == "__main__":
    released = release()
    print("released: " + (", ".join(released) if released else "nothing (every contract is released)"))
    sys.exit(0)
