"""JSON Schema at the tool boundary: checking a schema, and checking a value against it by JSON path."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for


def json_path(parts: Iterable[Any]) -> str:
    """A path into a JSON value: ("items", 0, "id") -> "$.items[0].id"."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def schema_problems(schema: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Why `schema` is not a valid JSON Schema, as (path inside the schema, message); empty when valid.
    The draft is the schema's own `$schema`, else 2020-12."""
    if not isinstance(schema, dict):
        return [((), "a JSON Schema here must be an object")]
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        return [(tuple(exc.path), exc.message)]
    return []


class Contract:
    """One side of a tool's contract (its input or its output schema), checked with `jsonschema`."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = validator_for(schema, default=Draft202012Validator)
        self.schema = schema
        self._validator: Validator = cls(schema)

    def violations(self, value: Any, limit: int = 5) -> list[str]:
        """`$.path: message` for each way `value` breaks the schema (the first `limit`, deepest first)."""
        errors = sorted(
            self._validator.iter_errors(value), key=lambda e: (-len(e.path), list(map(str, e.path)))
        )
        found = [f"{json_path(deque(e.absolute_path))}: {e.message}" for e in errors[:limit]]
        if len(errors) > limit:
            found.append(f"and {len(errors) - limit} more")
        return found

    def with_defaults(self, value: Any) -> Any:
        """`value` with the schema's top-level `default`s filled in where a property is absent."""
        props = self.schema.get("properties")
        if not isinstance(value, dict) or not isinstance(props, dict):
            return value
        filled = dict(value)
        for name, prop in props.items():
            if name not in filled and isinstance(prop, dict) and "default" in prop:
                filled[name] = prop["default"]
        return filled

    def project(self, value: Any) -> Any:
        """`value` with only the top-level properties the schema declares, when it declares some: the
        output of a step is what its contract names, not every field a provider adds to its answer."""
        props = self.schema.get("properties")
        if not isinstance(value, dict) or not isinstance(props, dict):
            return value
        return {k: v for k, v in value.items() if k in props}
