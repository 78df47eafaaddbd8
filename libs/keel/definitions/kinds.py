"""The kinds of definition Keel registers at runtime, one entry per kind in one table.

A kind is a parse function and, optionally, a function naming the definitions it refers to:

- `parse(data)` takes the raw data (parsed YAML or JSON) and returns the validated definition: an
  object with `name: str`, `version: int` and pydantic's `model_dump` (a frozen pydantic model fits;
  its `model_dump(mode="json", exclude_defaults=True)` must parse back to an equal definition).
  It refuses bad data by raising `pydantic.ValidationError` (its locations become JSON paths and YAML
  lines), `DefinitionInvalid`, or `keel.workflows.WorkflowError`.
- `references(definition)` lists `(location, kind, "name@version")` for every other definition it
  needs; each must be known (registered, or built in) when it is applied, or it is refused there.

Workflows and tools (keel.definitions.toolkind) are registered here: `keel.definitions.apply`
validates, publishes and judges tool records exactly like workflow records, readers keep their winners
(`DefinitionsReader.definitions("tool")`), and workflows that name a tool version are checked against
the registered tools as well as the built-in ones. A parse function may also raise `Located` (problems
with their locations in the data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from keel.definitions.problems import (
    DefinitionInvalid,
    Lines,
    Located,
    Problem,
    from_validation,
    json_path,
    line_of,
)
from keel.definitions.record import canonical, digest
from keel.definitions.toolkind import parse_tool
from keel.workflows import WorkflowError, WorkflowSpec, parse_workflow

Loc = tuple[str | int, ...]


class Definition(Protocol):
    name: str
    version: int

    def model_dump(self, *, mode: str, exclude_defaults: bool) -> Any: ...


@dataclass(frozen=True)
class Kind:
    name: str
    parse: Callable[[Any], Any]
    references: Callable[[Any], list[tuple[Loc, str, str]]] = lambda _: []


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> None:
    """Add (or replace) a kind in the table; readers and apply pick it up at once."""
    KINDS[kind.name] = kind


def _tool_steps(spec: WorkflowSpec) -> list[tuple[Loc, str, str]]:
    """Every tool a workflow names: a tool step's, and each tool an agent step may call."""
    refs: list[tuple[Loc, str, str]] = [
        (("steps", i, "tool"), "tool", s.tool) for i, s in enumerate(spec.steps) if s.tool
    ]
    refs += [
        (("steps", i, "tools", j), "tool", t) for i, s in enumerate(spec.steps) for j, t in enumerate(s.tools)
    ]
    return refs


register_kind(Kind("workflow", parse=parse_workflow, references=_tool_steps))
register_kind(Kind("tool", parse=parse_tool))


def builtin(kind: str) -> frozenset[str]:
    """Known without registration: the tools whose definitions this deployment loads from files
    (tools/*.yaml and KEEL_TOOL_DIRS)."""
    if kind != "tool":
        return frozenset()
    from keel.tooldefs import ToolRegistry  # loaded on use: a bad tool file fails the check loudly

    return frozenset(ToolRegistry.configured().names())


def content_of(value: Any) -> str:
    """The canonical JSON of a parsed definition. Defaults are left out: the text parses back to the same
    definition (validators that ask which fields were set see the same ones), and writing a default out
    or leaving it implicit gives the same digest."""
    return canonical(value.model_dump(mode="json", exclude_defaults=True))


@dataclass(frozen=True)
class Parsed:
    """A validated definition and the identity it will be registered under."""

    kind: str
    name: str
    version: int
    value: Any
    content: str  # canonical JSON
    digest: str


def parse(kind: str, data: Any, source: str, lines: Lines | None = None) -> Parsed:
    """Validate one definition (without its references); DefinitionInvalid says what and where."""
    entry = KINDS.get(kind)
    if entry is None:
        known = ", ".join(sorted(KINDS))
        raise DefinitionInvalid(source, [Problem("$", f"unknown definition kind {kind!r}; known: {known}")])
    if not isinstance(data, dict):
        raise DefinitionInvalid(
            source, [Problem("$", "expected a mapping at the top level", line_of(lines, ()))]
        )
    try:
        value = entry.parse(data)
    except ValidationError as exc:
        raise DefinitionInvalid(source, from_validation(exc, lines)) from None
    except WorkflowError as exc:
        problems = [
            Problem(json_path(loc), message, line_of(lines, loc))
            for message, loc in zip(exc.problems, exc.locations, strict=True)
        ]
        raise DefinitionInvalid(source, problems) from None
    except Located as exc:
        problems = [Problem(json_path(loc), what, line_of(lines, loc)) for loc, what in exc.problems]
        raise DefinitionInvalid(source, problems) from None
    content = content_of(value)
    return Parsed(kind, value.name, value.version, value, content, digest(content))


def check_references(
    parsed: Parsed, known: Callable[[str, str], bool], source: str, lines: Lines | None = None
) -> None:
    """Refuse a definition that names a definition nobody registered (a built-in counts as known)."""
    refs = [r for r in KINDS[parsed.kind].references(parsed.value) if not known(r[1], r[2])]
    from_files = {kind: builtin(kind) for kind in {kind for _, kind, _ in refs}}
    problems = [
        Problem(
            json_path(loc), f"unknown {kind} {ref!r}: not built in and not registered", line_of(lines, loc)
        )
        for loc, kind, ref in refs
        if ref not in from_files[kind]
    ]
    if problems:
        raise DefinitionInvalid(source, problems)


def ref_of(name: str, version: int) -> str:
    return f"{name}@{version}"


def known_in(refs: Iterable[tuple[str, str]]) -> Callable[[str, str], bool]:
    found = set(refs)
    return lambda kind, ref: (kind, ref) in found
