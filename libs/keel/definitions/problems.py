"""What is wrong with a definition and where: a JSON path, and the YAML line when the text is known."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]
Lines = dict[Loc, int]


@dataclass(frozen=True)
class Problem:
    path: str  # JSON path, e.g. $.steps[1].needs
    message: str
    line: int | None = None  # 1-based line in the YAML/JSON text, when it came from one

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}


class DefinitionInvalid(ValueError):
    """A definition is refused; one line per problem: `source:LINE: PATH: message`."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source, self.problems = source, list(problems)
        super().__init__("\n".join(_line(source, p) for p in self.problems))


class Located(ValueError):
    """Problems found by a kind's parse function, each with its location in the data (() = the whole
    definition); `keel.definitions.kinds.parse` turns them into JSON paths and lines."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"{json_path(loc)}: {what}" for loc, what in self.problems))


def _line(source: str, p: Problem) -> str:
    where = f"{source}:{p.line}" if p.line is not None else source
    return f"{where}: {p.path}: {p.message}"


def json_path(loc: Loc) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def load_text(text: str, source: str) -> tuple[Any, Lines]:
    """Parse YAML (JSON is YAML) and remember the line of every mapping key and sequence item."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DefinitionInvalid(source, [Problem("$", f"not valid YAML: {exc}", line)]) from None
    lines: Lines = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, loc: Loc, lines: Lines) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[(*loc, key.value)] = key.start_mark.line + 1
            _walk(value, (*loc, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines)


def line_of(lines: Lines | None, loc: Loc) -> int | None:
    """The line of `loc`, or of its nearest ancestor that is in the text (a missing field's parent)."""
    if not lines:
        return None
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def from_validation(exc: ValidationError, lines: Lines | None = None) -> list[Problem]:
    """A pydantic error (any definition model) as problems with paths; unknown fields named as such."""
    plain = {"extra_forbidden": "unknown field", "missing": "missing required field"}
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = plain.get(err["type"], str(err.get("ctx", {}).get("error", err["msg"])))
        out.append(Problem(json_path(loc), message, line_of(lines, loc)))
    return out
