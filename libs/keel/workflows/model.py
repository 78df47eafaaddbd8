"""Workflow specs: frozen models of a versioned step graph, validated on load with precise errors."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keel.workflows import template
from keel.workflows.graph import ancestry, find_cycle

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
TOOL_REF = re.compile(r"^[a-z][a-z0-9_]*@[0-9]+$")
FieldType = Literal["string", "number", "integer", "boolean", "object", "array"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)


def _check_name(value: Any, what: str) -> Any:
    if not isinstance(value, str) or not NAME.match(value):
        raise ValueError(f"invalid {what} name {value!r}: must match {NAME.pattern}")
    return value


class _Frozen(BaseModel):
    # extra="forbid" so a typo such as `need:` fails loudly instead of silently dropping a dependency.
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    """Exponential backoff between attempts of one step (the scheduler adds jitter)."""

    max_attempts: int = Field(default=3, ge=1)
    initial_backoff_ms: int = Field(default=500, ge=0)
    max_backoff_ms: int = Field(default=30_000, ge=0)
    multiplier: float = Field(default=2.0, ge=1.0)

    @model_validator(mode="after")
    def _cap_covers_start(self) -> RetryPolicy:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise ValueError(
                f"retry: max_backoff_ms {self.max_backoff_ms} < initial_backoff_ms {self.initial_backoff_ms}"
            )
        return self


class StepSpec(_Frozen):
    """One node of the graph: an LLM call or a tool call, with its policies."""

    name: str
    kind: Literal["llm", "tool"]
    needs: tuple[str, ...] = ()
    side_effects: bool = False
    retry: RetryPolicy = RetryPolicy()
    timeout_ms: int = Field(default=60_000, gt=0)
    agent: str | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    model: str | None = None  # llm: the model name the router resolves
    prompt: str | None = None  # llm: a template
    response_format: Literal["json", "text"] = "text"  # llm: json -> parsed object, text -> {"text": ...}
    tool: str | None = None  # tool: name@version
    input: dict[str, Any] = Field(default_factory=dict)  # tool: a template rendered into the tool's input

    @field_validator("name", mode="before")
    @classmethod
    def _valid_name(cls, value: Any) -> Any:
        return _check_name(value, "step")

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if value not in ("llm", "tool"):
            raise ValueError(f"unknown kind {value!r}; expected 'llm' or 'tool'")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> StepSpec:
        if self.kind == "llm":
            missing = [f for f in ("model", "prompt") if not getattr(self, f)]
            if missing:
                raise ValueError(f"llm step needs {' and '.join(missing)}")
            misplaced: list[str] = [f for f in ("tool", "input") if f in self.model_fields_set]
        else:
            if not self.tool:
                raise ValueError("tool step needs `tool` (format name@version, e.g. crm@1)")
            if not TOOL_REF.match(self.tool):
                raise ValueError(f"tool {self.tool!r} is not in the format name@version (e.g. crm@1)")
            misplaced = [f for f in ("model", "prompt", "response_format") if f in self.model_fields_set]
        if misplaced:
            raise ValueError(f"{self.kind} step must not set {', '.join(misplaced)}")
        template.paths(self.template)  # syntax only; what the paths point at is checked by the workflow
        return self

    @property
    def template(self) -> Any:
        """The templated part of the step: an llm step's prompt, a tool step's input."""
        return self.prompt if self.kind == "llm" else self.input


class WorkflowSpec(_Frozen):
    """One version of a workflow; valid by construction (graph, names and template references)."""

    name: str
    version: int = Field(ge=1)
    description: str = ""
    input: dict[str, FieldType] = Field(default_factory=dict)  # required run-input fields and their types
    steps: tuple[StepSpec, ...] = Field(min_length=1)

    @field_validator("name", mode="before")
    @classmethod
    def _valid_name(cls, value: Any) -> Any:
        return _check_name(value, "workflow")

    @field_validator("input", mode="before")
    @classmethod
    def _known_types(cls, value: Any) -> Any:
        for field, kind in value.items() if isinstance(value, dict) else ():
            _check_name(field, "input field")
            if kind not in FIELD_TYPES:
                raise ValueError(
                    f"input field {field!r} has unknown type {kind!r}; expected one of "
                    f"{', '.join(FIELD_TYPES)}"
                )
        return value

    @model_validator(mode="after")
    def _valid_graph(self) -> WorkflowSpec:
        if problems := _graph_problems(self):
            raise ValueError("\n".join(problems))
        return self

    def step(self, name: str) -> StepSpec:
        return next(s for s in self.steps if s.name == name)


def _graph_problems(spec: WorkflowSpec) -> list[str]:
    names = [s.name for s in spec.steps]
    known = set(names)
    counts = Counter(names)
    problems = [f"duplicate step name {n!r}" for n in dict.fromkeys(n for n in names if counts[n] > 1)]
    problems += [
        f"step {s.name!r} needs unknown step {d!r}" for s in spec.steps for d in s.needs if d not in known
    ]
    if problems:  # cycles and ancestry mean nothing on a graph with holes
        return problems
    needs = {s.name: s.needs for s in spec.steps}
    if cycle := find_cycle(needs):
        return [f"cycle in needs: {' -> '.join(cycle)}"]
    depends = ancestry(needs)
    for s in spec.steps:
        for root, ref, *_ in template.paths(s.template):
            if root == "input" and ref not in spec.input:
                problems.append(f"step {s.name!r} reads input.{ref}, which the workflow input lacks")
            elif root == "steps" and ref not in known:
                problems.append(f"step {s.name!r} reads steps.{ref}, an unknown step")
            elif root == "steps" and not depends(s.name, ref):
                # A step may only read outputs that are guaranteed committed before it starts.
                problems.append(
                    f"step {s.name!r} reads steps.{ref} but does not depend on {ref!r} (add it to needs)"
                )
    return list(dict.fromkeys(problems))
