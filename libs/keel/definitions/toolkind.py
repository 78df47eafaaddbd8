"""The "tool" kind: a tool definition (keel.tooldefs) validated for registration on the topic.

The same checks as a tool file (keel.tooldefs.load): each JSON Schema first, an input that is an object,
then the model with its validators. Every problem carries its location in the data, so the caller turns
it into a JSON path and, when the text is known, a YAML line."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from keel.definitions.problems import Located
from keel.tooldefs.contract import schema_problems
from keel.tooldefs.model import AT, ToolDefinition

_PLAIN = {"extra_forbidden": "unknown field", "missing": "missing required field"}


def parse_tool(data: Any) -> ToolDefinition:
    found: list[tuple[tuple[str | int, ...], str]] = []
    for field in ("input_schema", "output_schema"):
        if field in data:
            found += [
                ((field, *path), f"invalid JSON Schema: {why}") for path, why in schema_problems(data[field])
            ]
    schema = data.get("input_schema")
    if not found and isinstance(schema, dict) and schema.get("type") != "object":
        found.append((("input_schema", "type"), "a tool's input must be `type: object`"))
    try:
        definition = ToolDefinition.model_validate(data)
    except ValidationError as exc:
        raise Located(found + _validation(exc)) from None
    if found:
        raise Located(found)
    return definition


def _validation(exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] != "value_error":
            out.append((loc, _PLAIN.get(err["type"], err["msg"])))
            continue
        # The model's own validators: one problem a line, `dotted.path :: what` when it has a place.
        for part in str(err.get("ctx", {}).get("error", err["msg"])).split("\n"):
            sub, _, what = part.partition(AT)
            out.append(((*loc, *sub.split(".")), what) if what else (loc, part))
    return out
