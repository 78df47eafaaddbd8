"""Loading workflows from YAML: one file per version, validated on load, looked up by name and version."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from keel.schemas import REPO_ROOT
from keel.workflows.locate import graph_location
from keel.workflows.model import WorkflowSpec

WORKFLOW_DIR = REPO_ROOT / "workflows"


class WorkflowError(ValueError):
    """A workflow definition is invalid; one line per problem, each naming the file and the step."""

    def __init__(
        self, source: str, problems: list[str], locations: list[tuple[str | int, ...]] | None = None
    ) -> None:
        self.source, self.problems = source, problems
        # Per problem, where in the data it lies (() = the whole workflow), for JSON paths and lines.
        self.locations = locations if locations is not None else [() for _ in problems]
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def parse_workflow(data: Any, source: str = "<workflow>") -> WorkflowSpec:
    """Validate raw workflow data (parsed YAML); `source` names it in every error line."""
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        found = [p for err in exc.errors() for p in _describe(err, data)]
        raise WorkflowError(source, [m for m, _ in found], [loc for _, loc in found]) from None


# pydantic's wording for these two is about Python objects; say it in the YAML author's words.
_PLAIN = {"extra_forbidden": "unknown field", "missing": "missing required field"}


def _describe(err: ErrorDetails, data: Any) -> list[tuple[str, tuple[str | int, ...]]]:
    full: tuple[str | int, ...] = tuple(err["loc"])
    loc, where = list(err["loc"]), ""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        raw = data["steps"][loc[1]] if isinstance(data.get("steps"), list) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        where, loc = (f"step {name!r}" if isinstance(name, str) else f"step #{loc[1] + 1}"), loc[2:]
    if err["type"] == "value_error":  # our own messages already name their subject
        messages = str(err.get("ctx", {}).get("error", err["msg"])).split("\n")
    else:
        field = f"field {'.'.join(map(str, loc))!r}" if loc else ""
        where = ", ".join(w for w in (where, field) if w)
        messages = [_PLAIN.get(err["type"], err["msg"])]
    located = [(m, full or graph_location(m, data)) for m in messages]
    return [(f"{where}: {m}" if where else m, at) for m, at in located]


def load_workflow(path: Path | str) -> WorkflowSpec:
    """Read and validate one workflow file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WorkflowError(str(path), [f"cannot read: {exc}"]) from None
    if not isinstance(data, dict):
        raise WorkflowError(str(path), ["expected a mapping with name, version and steps at the top level"])
    return parse_workflow(data, str(path))


class UnknownWorkflow(LookupError):
    """No workflow (or no such version of one) in the catalog."""


class Catalog:
    """Every workflow version found in a directory, keyed by (name, version)."""

    def __init__(self, specs: dict[tuple[str, int], WorkflowSpec]) -> None:
        self._specs = dict(specs)

    @classmethod
    def load(cls, dir: Path | str = WORKFLOW_DIR) -> Catalog:
        if not Path(dir).is_dir():
            raise WorkflowError(str(dir), ["no such workflow directory"])
        specs: dict[tuple[str, int], WorkflowSpec] = {}
        for path in sorted(Path(dir).glob("*.yaml")):
            spec = load_workflow(path)
            # The file name is how people find a version; it must never disagree with the content.
            expected = f"{spec.name}.v{spec.version}.yaml"
            if path.name != expected:
                problem = f"file name must be <name>.v<version>.yaml, here {expected!r}"
                raise WorkflowError(str(path), [problem])
            specs[(spec.name, spec.version)] = spec
        return cls(specs)

    @classmethod
    def configured(cls) -> Catalog:
        """The shipped workflows plus those in KEEL_WORKFLOW_DIRS (os.pathsep-separated directories)."""
        specs: dict[tuple[str, int], WorkflowSpec] = {}
        extra = [d for d in os.environ.get("KEEL_WORKFLOW_DIRS", "").split(os.pathsep) if d]
        directories: list[Path | str] = [WORKFLOW_DIR, *extra]
        for directory in directories:
            for key, spec in cls.load(directory)._specs.items():
                if key in specs:
                    raise WorkflowError(str(directory), [f"{key[0]} v{key[1]} is defined twice"])
                specs[key] = spec
        return cls(specs)

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._specs})

    def versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self._specs if n == name)

    def get(self, name: str, version: int | None = None) -> WorkflowSpec:
        """One version of a workflow; the newest when `version` is None."""
        versions = self.versions(name)
        if not versions:
            raise UnknownWorkflow(f"unknown workflow {name!r}; known: {', '.join(self.names()) or 'none'}")
        if version is None:
            version = versions[-1]
        if version not in versions:
            raise UnknownWorkflow(
                f"workflow {name!r} has no version {version}; known versions: {', '.join(map(str, versions))}"
            )
        return self._specs[(name, version)]


class InvalidInput(ValueError):
    """A run input does not match the workflow's declared input fields."""

    def __init__(self, workflow: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid input for workflow {workflow!r}: {'; '.join(problems)}")


# bool before int: bool is an int in Python but not in JSON.
_JSON_TYPES = (("boolean", bool), ("integer", int), ("number", float), ("string", str), ("object", dict),
               ("array", list))  # fmt: skip


def _json_type(value: Any) -> str:
    for kind, types in _JSON_TYPES:
        if isinstance(value, types):
            return kind
    return "null" if value is None else type(value).__name__


def validate_input(spec: WorkflowSpec, input: dict[str, Any]) -> None:
    """Raise InvalidInput listing every missing field and wrong type; extra fields are allowed."""
    missing = [f for f in spec.input if f not in input]
    problems = [f"missing field{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"] if missing else []
    for field, kind in spec.input.items():
        got = _json_type(input[field]) if field in input else kind
        if got != kind and not (kind == "number" and got == "integer"):  # an integer is a number
            problems.append(f"field {field!r} should be {kind}, got {got}")
    if problems:
        raise InvalidInput(spec.name, problems)
