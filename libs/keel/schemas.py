"""The Avro contracts in schemas/: where they live and which topic each one is the envelope of."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO_ROOT / "schemas"

# Envelope file (without .avsc) of each topic: one envelope per topic.
TOPIC_ENVELOPES: dict[str, str] = {
    "keel.run-requests": "run_request",
    "keel.run-events": "run_event",
    "keel.step-commands": "step_command",
    "keel.tool-commands": "tool_command",
    "keel.control": "control_command",
    "keel.ledger": "ledger_record",
    "keel.dead-letters": "dead_letter",
    "keel.definitions": "definition",
    "keel.budget-commands": "budget_command",
    "keel.audit": "audit_record",
}


def schema_names() -> list[str]:
    """Every contract in schemas/, by file stem, sorted."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc"))


@cache
def schema_text(name: str) -> str:
    """The .avsc text of a contract, exactly as committed."""
    return (SCHEMA_DIR / f"{name}.avsc").read_text()


def schema_json(name: str) -> dict[str, Any]:
    """The parsed JSON of a contract (a fresh copy each call: fastavro mutates what it parses)."""
    data: dict[str, Any] = json.loads(schema_text(name))
    return data


def subject_for(topic: str) -> str:
    """Confluent TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"
