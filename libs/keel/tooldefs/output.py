"""A provider's answer read through a tool's output contract (pure): what the adapters apply to every
answer, and what a replay applies to a recorded one."""

from __future__ import annotations

from typing import Any

from keel.tooldefs.contract import Contract
from keel.tooldefs.model import ToolDefinition
from keel.toolrun.result import ContractViolation, Json


def value_at(value: Any, dotted: str) -> Any:
    """The value at a dotted path (`data.0.id`); None when any step is missing."""
    for part in [p for p in dotted.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def check_output(definition: ToolDefinition, raw: Any, contract: Contract | None = None) -> Json:
    """The answer projected onto the output contract; ContractViolation (JSON paths) when it breaks the
    contract or, for an HTTP tool, lacks the provider's id of the effect. A worker's tool is held to the
    contract alone here: its runner checks the id against its own output model. `contract` is the
    definition's output contract when the caller already built it."""
    contract = contract or Contract(definition.output_schema)
    breaks = contract.violations(raw)
    if breaks:
        raise ContractViolation("; ".join(breaks))
    output: Json = contract.project(raw)
    if definition.request is not None:
        found = value_at(output, definition.external_id)
        if found is None or found == "":
            raise ContractViolation(f"$.{definition.external_id}: the provider's id of the effect is missing")
    return output
