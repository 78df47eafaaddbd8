"""Pure registry state: subjects, versions, global ids and compatibility, rebuilt from its log records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
# A dashboard built against last month's schema must read this month's topic, and the other way round.
DEFAULT_LEVEL = "FULL_TRANSITIVE"


class RegistryError(Exception):
    """An error in Confluent's shape: HTTP status plus error_code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def canonical(schema: str) -> str:
    """Identity of a schema text: same JSON, whatever the whitespace or key order."""
    try:
        return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: not JSON: {exc}") from None


def parse(schema: str) -> avro.schema.Schema:
    try:
        return avro.schema.parse(schema)
    except Exception as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None


def compatible(reader: str, writer: str) -> bool:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(parse(reader), parse(writer))
    return bool(result.compatibility is SchemaCompatibilityType.compatible)


def check(level: str, new: str, existing: list[str]) -> list[str]:
    """Reasons `new` may not follow `existing` (oldest first) under `level`; empty when it may."""
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    problems = []
    for i, old in enumerate(against):
        if level.startswith(("BACKWARD", "FULL")) and not compatible(new, old):
            problems.append(f"new schema cannot read data written with version #{i + 1} of {len(against)}")
        if level.startswith(("FORWARD", "FULL")) and not compatible(old, new):
            problems.append(f"readers of version #{i + 1} of {len(against)} cannot read the new schema")
    return problems


@dataclass
class RegistryState:
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema text
    ids_by_canonical: dict[str, int] = field(default_factory=dict)  # canonical text -> id
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids by version - 1
    levels: dict[str, str] = field(default_factory=dict)  # subject ("" = global) -> level

    def apply(self, record: dict[str, Any]) -> None:
        """Apply one log record (as written by `plan_register` / `plan_config`)."""
        if record["kind"] == "schema":
            sid, text = int(record["id"]), record["schema"]
            self.schemas[sid] = text
            self.ids_by_canonical.setdefault(canonical(text), sid)
            versions = self.subjects.setdefault(record["subject"], [])
            if int(record["version"]) == len(versions) + 1:
                versions.append(sid)
        elif record["kind"] == "config":
            self.levels[record["subject"] or ""] = record["compatibility"]

    def level(self, subject: str | None) -> str:
        return self.levels.get(subject or "", self.levels.get("", DEFAULT_LEVEL))

    def versions(self, subject: str) -> list[int]:
        if subject not in self.subjects:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def version(self, subject: str, version: str | int) -> tuple[int, int]:
        """(version number, schema id) of `latest` or a number."""
        ids = self.versions(subject)
        if version in ("latest", -1, "-1"):
            return len(ids), ids[-1]
        try:
            n = int(version)
        except ValueError:
            raise RegistryError(422, 42202, f"Invalid version {version!r}") from None
        if not 1 <= n <= len(ids):
            raise RegistryError(404, 40402, f"Version {version} not found.")
        return n, ids[n - 1]

    def lookup(self, subject: str, schema: str) -> tuple[int, int]:
        ids = self.versions(subject)
        sid = self.ids_by_canonical.get(canonical(schema))
        if sid is None or sid not in ids:
            raise RegistryError(404, 40403, "Schema not found")
        return ids.index(sid) + 1, sid

    def plan_register(self, subject: str, schema: str) -> tuple[int, dict[str, Any] | None]:
        """The id `schema` gets under `subject`, and the log record to write (None if already there)."""
        parse(schema)
        key = canonical(schema)
        ids = self.subjects.get(subject, [])
        sid = self.ids_by_canonical.get(key)
        if sid is not None and sid in ids:
            return sid, None
        problems = check(self.level(subject), schema, [self.schemas[i] for i in ids])
        if problems:
            raise RegistryError(
                409,
                409,
                f"Schema being registered is incompatible with an earlier schema "
                f"for subject '{subject}' ({self.level(subject)}): " + "; ".join(problems),
            )
        if sid is None:
            sid = max(self.schemas, default=0) + 1
        return sid, {
            "kind": "schema",
            "subject": subject,
            "version": len(ids) + 1,
            "id": sid,
            "schema": schema,
        }

    def plan_config(self, subject: str | None, level: str) -> dict[str, Any]:
        if level not in LEVELS:
            raise RegistryError(
                422, 42203, f"Invalid compatibility level {level!r}; one of {', '.join(LEVELS)}"
            )
        return {"kind": "config", "subject": subject, "compatibility": level}


def record_key(record: dict[str, Any]) -> str:
    """Compaction key: one record per subject version, one per subject's config."""
    if record["kind"] == "schema":
        return f"schema|{record['subject']}|{record['version']}"
    return f"config|{record['subject'] or ''}"
