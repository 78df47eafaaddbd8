"""Workflow specs: frozen models of a versioned step graph, validated on load with precise errors."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keel.tooldefs.contract import schema_problems
from keel.workflows import template
from keel.workflows.graph import ancestry, fallback_problems, find_cycle

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
TOOL_REF = re.compile(r"^[a-z][a-z0-9_]*@[0-9]+$")
FieldType = Literal["string", "number", "integer", "boolean", "object", "array"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
StepKind = Literal["llm", "tool", "agent", "approval"]
STEP_KINDS: tuple[str, ...] = get_args(StepKind)
# The fields only some kinds take; a kind given another's field is refused (a likely mix-up).
_KIND_FIELDS: dict[str, frozenset[str]] = {
    "llm": frozenset(
        {
            "model",
            "prompt",
            "response_format",
            "output_schema",
            "max_tokens",
            "route_class",
            "budget_fallback_model",
        }
    ),
    # `approval` only with requires_approval (checked in _check_approval)
    "tool": frozenset({"tool", "input", "requires_approval", "approval"}),
    "approval": frozenset({"prompt", "approval"}),
    "agent": frozenset(
        {
            "model",
            "prompt",
            "system",
            "tools",
            "max_turns",
            "max_violations",
            "max_repeats",
            "output_schema",
            "max_tokens",
            "route_class",
            "budget_fallback_model",
        }
    ),
}


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


class Fallback(_Frozen):
    """`{fallback: STEP}`: the step (declared `fallback_only`) that stands in for this one."""

    fallback: str

    @field_validator("fallback", mode="before")
    @classmethod
    def _valid_name(cls, value: Any) -> Any:
        return _check_name(value, "fallback step")


DEFAULT_APPROVAL_TIMEOUT_MS = 24 * 3600 * 1000


class ApprovalPolicy(_Frozen):
    """How long a human has to decide, and what applies when nobody did: `deny` (as a human's deny:
    the run fails, or the step's on_failure fallback runs), or `{fallback: STEP}`."""

    timeout_ms: int = Field(default=DEFAULT_APPROVAL_TIMEOUT_MS, gt=0)
    on_timeout: Literal["deny"] | Fallback = "deny"

    @property
    def timeout_rule(self) -> str:
        """The rule as approval_requested shows it: "deny" or "fallback:STEP"."""
        return "deny" if isinstance(self.on_timeout, str) else f"fallback:{self.on_timeout.fallback}"


class StepSpec(_Frozen):
    """One node of the graph: an LLM call, a tool call, or an agent (a model that chooses its tools turn by
    turn, docs/agents.md), with its policies. For an agent, `retry` and `timeout_ms` apply to each model
    turn and each tool call, one at a time."""

    name: str
    kind: StepKind
    needs: tuple[str, ...] = ()
    side_effects: bool = False
    retry: RetryPolicy = RetryPolicy()
    timeout_ms: int = Field(default=60_000, gt=0)
    agent: str | None = None
    budget_usd: float | None = Field(default=None, ge=0)  # the step's budget envelope
    model: str | None = None  # llm, agent: the model name the router resolves
    prompt: str | None = None  # llm: a template; agent: the user message's template
    response_format: Literal["json", "text"] = "text"  # llm: json -> parsed object, text -> {"text": ...}
    # llm, agent: the JSON Schema the answer must meet (llm: implies json; the model is asked once more
    # with the violations, then the step is quarantined; agent: the final answer's, checked like a tool
    # call's arguments).
    output_schema: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, gt=0)  # llm, agent: per model call
    # llm, agent: the class of work (extraction, planning, code, write, ...) the model router picks the
    # route for (KEEL_MODEL_ROUTE_CLASSES); `model` stays the default when no class route is configured.
    route_class: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    # llm, agent: when a model call's worst case would cross a budget, ask this cheaper model instead of
    # stopping the run (its own worst case is reserved; if that too would cross, the run stops).
    budget_fallback_model: str | None = None
    tool: str | None = None  # tool: name@version
    input: dict[str, Any] = Field(default_factory=dict)  # tool: a template rendered into the tool's input
    system: str | None = None  # agent: the system message's template
    tools: tuple[str, ...] = ()  # agent: the tools (name@version) the model may call
    max_turns: int = Field(default=10, ge=1)  # agent: model turns before the run is hard-stopped
    # agent: refused calls (unknown tool, bad arguments, malformed JSON, an answer breaking the schema) the
    # model is told about and may correct; one more and the step is quarantined with the evidence.
    max_violations: int = Field(default=3, ge=0)
    # agent: the same tool with the same canonical arguments this many times in a run is a loop: the run
    # is hard-stopped with the repeated calls as evidence (0: no loop detection; max_turns and the
    # budgets still stop it).
    max_repeats: int = Field(default=3, ge=0)
    # Approvals and fallbacks (docs/quarantine.md). tool: a human approves the rendered input and key
    # before the first attempt; approval (kind), requires_approval tools: the deadline and its rule.
    requires_approval: bool = False
    approval: ApprovalPolicy | None = None
    # Any kind: the step that stands in for this one when it would be quarantined / fail the run.
    on_quarantine: Fallback | None = None
    on_failure: Fallback | None = None
    fallback_only: bool = False  # runs only when chosen as another step's fallback (else: skipped)

    @field_validator("name", mode="before")
    @classmethod
    def _valid_name(cls, value: Any) -> Any:
        return _check_name(value, "step")

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if value not in STEP_KINDS:
            raise ValueError(f"unknown kind {value!r}; expected one of {', '.join(map(repr, STEP_KINDS))}")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> StepSpec:
        own = _KIND_FIELDS[self.kind]
        misplaced = sorted(
            f for f in self.model_fields_set if f not in own and any(f in v for v in _KIND_FIELDS.values())
        )
        if misplaced:
            raise ValueError(f"{self.kind} step must not set {', '.join(misplaced)}")
        if self.kind in ("llm", "agent"):
            missing = [f for f in ("model", "prompt") if not getattr(self, f)]
            if missing:
                raise ValueError(f"{self.kind} step needs {' and '.join(missing)}")
        if self.kind == "approval" and not self.prompt:
            raise ValueError("approval step needs `prompt` (what the human is asked)")
        if self.kind == "tool" and self.approval is not None and not self.requires_approval:
            raise ValueError("tool step sets `approval` without `requires_approval: true`")
        if self.kind == "agent" and (self.on_quarantine or self.on_failure):
            # one of its calls may fail while others are still in flight: it cannot be replaced safely
            raise ValueError("agent step must not set on_quarantine or on_failure")
        if self.kind == "approval" and self.on_quarantine is not None:
            raise ValueError("approval step must not set on_quarantine: it is never quarantined")
        if self.kind == "tool":
            if not self.tool:
                raise ValueError("tool step needs `tool` (format name@version, e.g. crm@1)")
            if not TOOL_REF.match(self.tool):
                raise ValueError(f"tool {self.tool!r} is not in the format name@version (e.g. crm@1)")
        if self.kind == "agent":
            self._check_agent()
        if self.output_schema is not None:
            for where, problem in schema_problems(self.output_schema):
                at = "/".join(map(str, where))
                raise ValueError(
                    f"output_schema is not a valid JSON Schema{f' at {at}' if at else ''}: {problem}"
                )
        template.paths(self.template)  # syntax only; what the paths point at is checked by the workflow
        return self

    def _check_agent(self) -> None:
        if not self.agent:
            raise ValueError("agent step needs `agent` (the agent id every event of the step carries)")
        if not self.tools:
            raise ValueError("agent step needs `tools`: the tools (name@version) its model may call")
        bad = [t for t in self.tools if not isinstance(t, str) or not TOOL_REF.match(t)]
        if bad:
            raise ValueError(f"tools {bad} are not in the format name@version (e.g. crm@1)")
        names = [t.split("@")[0] for t in self.tools]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # the model calls a tool by its name alone: two versions of one would be ambiguous
            raise ValueError(f"agent tools name {twice} more than once: give each tool one version")

    @property
    def template(self) -> Any:
        """The templated part of the step: an llm step's prompt, an agent's system and user messages, a
        tool step's input."""
        if self.kind == "agent":
            return [self.system or "", self.prompt]
        return self.prompt if self.kind in ("llm", "approval") else self.input

    @property
    def approval_policy(self) -> ApprovalPolicy | None:
        """The approval this step waits for before it acts (defaults filled in), or None."""
        if self.kind == "approval" or self.requires_approval:
            return self.approval or ApprovalPolicy()
        return None

    @property
    def fallbacks(self) -> dict[str, str]:
        """Where the step's fallbacks are declared -> the fallback step's name."""
        found = {"on_quarantine": self.on_quarantine, "on_failure": self.on_failure}
        if self.approval is not None and not isinstance(self.approval.on_timeout, str):
            found["approval.on_timeout"] = self.approval.on_timeout
        return {where: f.fallback for where, f in found.items() if f is not None}

    @property
    def tool_names(self) -> dict[str, str]:
        """agent: the name the model calls each tool by -> its name@version."""
        return {t.split("@")[0]: t for t in self.tools}


class WorkflowSpec(_Frozen):
    """One version of a workflow; valid by construction (graph, names and template references)."""

    name: str
    version: int = Field(ge=1)
    description: str = ""
    input: dict[str, FieldType] = Field(default_factory=dict)  # required run-input fields and their types
    # The run's hard spend limit (docs/budgets.md); a run request may lower it, never raise it.
    budget_usd: float | None = Field(default=None, ge=0)
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
    problems += fallback_problems(spec, depends)
    return list(dict.fromkeys(problems))
