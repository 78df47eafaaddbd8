"""Reading tool definitions from YAML: every problem refused with its file, JSON path and YAML line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from keel.tooldefs.contract import json_path, schema_problems
from keel.tooldefs.model import AT, ToolDefinition

# pydantic's wording for these is about Python objects; say it in the YAML author's words.
_PLAIN = {"extra_forbidden": "unknown field", "missing": "missing required field"}


class ToolDefinitionError(ValueError):
    """A tool definition is invalid: one line per problem, `file:line: $.path: what`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__("\n".join(f"{source}{p}" for p in problems))


def _line_index(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """1-based line of every key path in a composed YAML document (the line of the key where there is
    one, so an unknown field points at itself)."""
    lines: dict[tuple[Any, ...], int] = {}
    if node is None:
        return lines
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines.update(_line_index(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, (*path, i)))
    return lines


def _line_of(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    """The line of `path`, or of its nearest ancestor present in the file (a missing field: its parent)."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _where(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> str:
    line = _line_of(lines, path)
    return (f":{line}" if line else "") + f": {json_path(path)}"


def _problems(exc: ValidationError, lines: dict[tuple[Any, ...], int]) -> list[str]:
    found: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "value_error":  # our own validators: one message per line, paths in them
            message = str(err.get("ctx", {}).get("error", err["msg"]))
            for part in message.split("\n"):
                sub, _, what = part.partition(AT)
                sub_path = (*loc, *[p for p in sub.split(".") if p]) if what else loc
                found.append(f"{_where(lines, sub_path)}: {what or part}")
        else:
            found.append(f"{_where(lines, loc)}: {_PLAIN.get(err['type'], err['msg'])}")
    return found


def parse_definition(
    data: Any, source: str = "<tool>", lines: dict[tuple[Any, ...], int] | None = None
) -> ToolDefinition:
    """Validate raw definition data (parsed YAML or JSON): the model, then each JSON Schema in it."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise ToolDefinitionError(source, [": a tool definition must be a mapping"])
    problems: list[str] = []
    for field in ("input_schema", "output_schema"):
        if field in data:
            for path, message in schema_problems(data[field]):
                full = (field, *path)
                problems.append(f"{_where(lines, full)}: invalid JSON Schema: {message}")
    if (
        not problems
        and isinstance(data.get("input_schema"), dict)
        and data["input_schema"].get("type") != "object"
    ):
        problems.append(f"{_where(lines, ('input_schema', 'type'))}: a tool's input must be `type: object`")
    try:
        definition = ToolDefinition.model_validate(data)
    except ValidationError as exc:
        raise ToolDefinitionError(source, problems + _problems(exc, lines)) from None
    if problems:
        raise ToolDefinitionError(source, problems)
    return definition


def load_definition(path: Path | str) -> ToolDefinition:
    """Read and validate one definition file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ToolDefinitionError(str(path), [f": cannot read: {exc}"]) from None
    return parse_definition(data, str(path), _line_index(node))
