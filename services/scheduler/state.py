"""The scheduler's state of one run, and its versioned JSON form in the scheduler's changelog topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from keel import vocab

# Step statuses (the words are keel.vocab's; these names are the scheduler's own).
PENDING, DISPATCHED, WAITING_RETRY = vocab.PENDING, vocab.DISPATCHED, vocab.WAITING_RETRY
RESERVING = vocab.RESERVING  # the attempt waits for the budget enforcer's answer to its reservation
COMMITTED, FAILED = vocab.COMMITTED, vocab.FAILED
STEP_CANCELED = vocab.CANCELED  # the run was canceled before this step's next attempt; no effect is pending
# Run statuses. CANCELING: a cancel arrived while attempts were in flight; no step starts, and the run
# ends canceled once they have settled (or goes to quarantine if one's outcome turns out unknown).
RUNNING, QUARANTINED, CANCELING = vocab.RUNNING, vocab.QUARANTINED, vocab.CANCELING
PAUSED = vocab.PAUSED  # no new attempt starts; calls in flight settle and are recorded
AWAITING_APPROVAL, SKIPPED, FELL_BACK = vocab.AWAITING_APPROVAL, vocab.SKIPPED, vocab.FELL_BACK
COMPLETED, RUN_FAILED, CANCELED = vocab.COMPLETED, vocab.FAILED, vocab.CANCELED
TERMINAL = vocab.TERMINAL_RUN_STATUSES

# The version of the JSON form written by `to_json`. Bump it with every change of the form and add an
# upcaster below: the changelog holds records of every version ever written, and a restore reads them all.
STATE_VERSION = 6


@dataclass
class StepState:
    status: str = PENDING
    attempt: int = 0
    fire_at: int | None = None  # ms since epoch: when the next attempt is due (a durable retry timer)
    deadline: int | None = None  # ms since epoch: when the current attempt counts as lost
    output: Any = None
    external_id: str | None = None
    # The command input and idempotency key rendered for the first attempt; every retry reuses them, so
    # an upgrade that renders templates differently can never change the key of a step under way.
    input_json: str | None = None
    idempotency_key: str | None = None
    blocked: int = 0  # attempts the adapter refused without calling the provider (they do not count)
    # ms since epoch: when the first attempt was issued, i.e. the key's first possible use. A provider
    # forgets keys after its retention window; past it, a repeat is no longer safe (see outcomes).
    first_issued_at: int | None = None
    last_failure: str | None = None  # failure class of the latest failed or timed-out attempt
    agent: AgentState | None = None  # an agent step's loop (docs/agents.md); None for other kinds
    # Budgets (docs/budgets.md): the attempt's worst-case cost in micro-dollars, computed when its input is
    # rendered (None: the unit costs nothing, no reservation); while RESERVING, when the current attempt's
    # first reserve went out and how many reserves it has sent.
    worst_micros: int | None = None
    reserve_since: int | None = None
    reserve_tries: int = 0
    # Approvals (docs/quarantine.md): while AWAITING_APPROVAL, the open approval case: case_id, the
    # rendered input's content ref and the key it is bound to, the deadline (also in fire_at), the rule
    # that applies on deadline; kept after the decision (with it) as the step's record.
    approval: dict[str, Any] | None = None
    fallback_for: str | None = None  # a fallback step chosen to stand in for this step (FELL_BACK)
    # Fair dispatch (docs/tenancy.md section 6): ms since epoch when the attempt, ready to go, was held
    # for a slot of its tenant (WAITING_RETRY with no timer, `attempt` already the one to send). The
    # tenant queues are rebuilt from it after a restart, in this order.
    queued_at: int | None = None


@dataclass
class AgentState:
    """The durable loop of one agent step: the conversation so far and the sub-steps of its current turn.
    Each sub-step (the turn's model call, each tool call) is a StepState of its own, retried and timed
    out by the rules of a step of its kind."""

    turn: int = 0  # the current turn, from 1 (0: none issued yet)
    messages: Any = field(default_factory=list)  # the conversation: only committed turns and results
    model: StepState = field(default_factory=lambda: StepState())  # the current turn's model call
    calls: dict[str, StepState] = field(default_factory=dict)  # its tool calls sent to the adapters
    # Per tool call of the current turn (by sub-step name): the model's call id, the tool, the key, and
    # `refused` (why it was not called) or `same_as` (an identical write earlier in the turn).
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)  # every refusal so far, the evidence of a case
    chosen: list[dict[str, Any]] = field(default_factory=list)  # the latest calls, for a hard stop's evidence
    repeats: dict[str, int] = field(default_factory=dict)  # tool|canonical arguments -> calls in the run

    def units(self) -> dict[str, StepState]:
        """The sub-steps of the current turn by name: its model call and its tool calls."""
        return {f"turn-{self.turn}": self.model, **self.calls}

    def copy(self) -> AgentState:
        new = _clone(self)
        new.model = _clone(self.model)
        new.calls = {name: _clone(call) for name, call in self.calls.items()}
        new.meta = dict(self.meta)
        new.violations, new.chosen, new.repeats = list(self.violations), list(self.chosen), dict(self.repeats)
        new.messages = list(self.messages) if isinstance(self.messages, list) else self.messages
        return new

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> AgentState:
        raw = dict(raw)
        raw["model"] = StepState(**raw.get("model", {}))
        raw["calls"] = {name: StepState(**c) for name, c in raw.get("calls", {}).items()}
        return cls(**raw)


@dataclass
class RunState:
    run_id: str
    tenant_id: str
    workflow: str
    workflow_version: int
    partition: int
    input: dict[str, Any]
    task_id: str | None = None
    trace_id: str | None = None
    requested_by: str | None = None
    status: str = RUNNING
    steps: dict[str, StepState] = field(default_factory=dict)
    ended_at: int | None = None  # ms since epoch: when the run became terminal (retention counts from it)
    canceled_by: str | None = None  # who asked for the cancel, and why (kept while in-flight calls settle)
    cancel_reason: str | None = None
    budget_micros: int | None = None  # the run's hard limit (docs/budgets.md), None: no run limit
    # Cases (docs/quarantine.md), by case id: kind, step, call, attempt, key, and once decided the
    # decision, who made it and the command; a second decision on a case is refused from this.
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    paused_by: str | None = None  # who paused the run, and why (while PAUSED)
    pause_reason: str | None = None
    # A re-run (docs/rerun.md): the origin run, and per step at or after from_step the origin's key and
    # the content ref of its rendered input (a step rendering the same input keeps that key).
    rerun_of: str | None = None
    origin_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    version: int = STATE_VERSION

    def committed(self) -> set[str]:
        return {n for n, s in self.steps.items() if s.status == COMMITTED}

    def started(self) -> set[str]:
        return {n for n, s in self.steps.items() if s.status != PENDING}

    def in_flight(self) -> list[str]:
        """Steps with an attempt issued and not yet reported: its call may be under way right now (for an
        agent step: one of its sub-steps)."""
        return [
            n
            for n, s in self.steps.items()
            if s.status == DISPATCHED
            and (s.agent is None or any(u.status == DISPATCHED for u in s.agent.units().values()))
        ]

    def all_units(self) -> list[StepState]:
        """Every unit's state: the plain steps, and the current sub-steps of the agent steps."""
        found: list[StepState] = []
        for step in self.steps.values():
            found += list(step.agent.units().values()) if step.agent is not None else [step]
        return found

    def outputs(self) -> dict[str, Any]:
        """The outputs the steps after each step see: a committed step's own, and for a step that fell
        back, its fallback's once that has committed (the fallback stands in for it)."""
        found = {n: s.output for n, s in self.steps.items() if s.status == COMMITTED}
        for name, step in self.steps.items():
            if step.status == FELL_BACK and step.fallback_for in found:
                found[name] = found[step.fallback_for]
        return found

    def copy(self) -> RunState:
        """A copy the core may change without touching this one: the run and its steps are new objects;
        the input and the steps' outputs are shared, as the core only ever replaces them (a JSON round
        trip did the same at many times the cost, for every message the scheduler handles)."""
        new = _clone(self)
        new.steps = {name: _clone(step) for name, step in self.steps.items()}
        for step in new.steps.values():
            if step.agent is not None:
                step.agent = step.agent.copy()
        new.input = dict(self.input)
        new.cases = {case: dict(record) for case, record in self.cases.items()}
        for step in new.steps.values():
            if step.approval is not None:
                step.approval = dict(step.approval)
        return new

    def to_json(self) -> bytes:
        # Fields holding None are left out (every such field defaults to None): an ended run's marker
        # stays small, and a reader fills them back in.
        raw = _without_none(asdict(self))
        raw["steps"] = {name: _without_none(step) for name, step in raw["steps"].items()}
        for step in raw["steps"].values():
            if "agent" in step:
                agent = step["agent"]
                agent["model"] = _without_none(agent["model"])
                agent["calls"] = {n: _without_none(c) for n, c in agent["calls"].items()}
        return json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunState:
        raw = upcast(json.loads(data))
        steps = {}
        for name, s in raw["steps"].items():
            if s.get("agent") is not None:
                s = {**s, "agent": AgentState.from_raw(s["agent"])}
            steps[name] = StepState(**s)
        raw["steps"] = steps
        return cls(**raw)


T = TypeVar("T")


def _clone(obj: T) -> T:
    """A shallow copy of a dataclass instance, without `__init__` (5x faster than `replace`)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def _without_none(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if v is not None}


def _v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    # v1 had no version field, no ended_at (in its first releases), no cancel fields, and steps without
    # their rendered input: such a step renders once more at its next attempt, then keeps what it got.
    raw.setdefault("ended_at", None)
    for step in raw["steps"].values():
        step.setdefault("input_json", None)
        step.setdefault("idempotency_key", None)
        step.setdefault("blocked", 0)
        step.setdefault("last_failure", None)
    return raw


def _v2_to_v3(raw: dict[str, Any]) -> dict[str, Any]:
    # v3 added agent steps' loops (StepState.agent); a v2 record has none. The version was bumped so that
    # a v2 scheduler refuses a v3 record loudly instead of failing on the unknown field.
    return raw


def _v3_to_v4(raw: dict[str, Any]) -> dict[str, Any]:
    # v4 added cases, pause fields and steps' approvals and fallbacks; a v3 record has none of them.
    raw.setdefault("cases", {})
    return raw


def _v4_to_v5(raw: dict[str, Any]) -> dict[str, Any]:
    # v5 added re-runs (rerun_of, origin_keys); a v4 record is an ordinary run.
    raw.setdefault("origin_keys", {})
    return raw


def _v5_to_v6(raw: dict[str, Any]) -> dict[str, Any]:
    # v6 added fair dispatch (StepState.queued_at); a v5 record has no held step.
    return raw


# version -> the function that lifts a record of that version to the next one.
UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Lift a stored record of any released version to the current form, one version at a time."""
    version = raw.pop("version", 1)
    if version > STATE_VERSION:
        raise ValueError(
            f"run state {raw.get('run_id')!r} has version {version}, newer than this scheduler's "
            f"{STATE_VERSION}: it was written by a newer release"
        )
    while version < STATE_VERSION:
        raw = UPCASTERS[version](raw)
        version += 1
    known = {f.name for f in fields(RunState)}
    unknown = sorted(set(raw) - known)
    if unknown:  # a field this release does not know would be silently dropped by the next write
        raise ValueError(
            f"run state {raw.get('run_id')!r} has unknown fields {unknown} for version {version}"
        )
    return raw
