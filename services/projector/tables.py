"""The projection tables as data: key columns, JSON columns and how each column merges on conflict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from keel import vocab


class Merge(Enum):
    """How an upsert combines the stored value (old) with the incoming one (new)."""

    NEW = "new"  # the new value when it is not null, else the old one
    FIRST = "first"  # the old value when it is not null: facts that never change once known
    ADD = "add"  # old + new: sums of costs
    MAX = "max"
    MIN = "min"


@dataclass(frozen=True)
class Status:
    """A status column: the new value wins unless the old one is final or ranks higher.

    Ranks make the merge independent of late arrivals (a `scheduled` after `started` changes nothing);
    equal ranks let the newest fact win (a step goes running -> failed -> retrying -> running)."""

    rank: Mapping[str, int]
    final: frozenset[str] = frozenset()


Policy = Merge | Status


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    # Columns absent here are written on insert only; a table with no merges is insert-only.
    merge: Mapping[str, Policy] = field(default_factory=dict)
    json: frozenset[str] = frozenset()


RUN_STATUS = Status(
    rank={vocab.UNKNOWN: 0, vocab.CREATED: 1, vocab.SCHEDULED: 2, vocab.RUNNING: 3, vocab.QUARANTINED: 3,
          vocab.PAUSED: 3, vocab.COMPLETED: 4, vocab.FAILED: 4, vocab.CANCELED: 4},
    final=vocab.TERMINAL_RUN_STATUSES,
)  # fmt: skip
STEP_STATUS = Status(rank={}, final=frozenset({vocab.COMMITTED}))
ATTEMPT_STATUS = Status(rank={vocab.RUNNING: 0, vocab.SUCCEEDED: 1, vocab.FAILED: 2, vocab.COMMITTED: 3})

RUNS = Table(
    "runs",
    ("run_id",),
    {
        "tenant_id": Merge.FIRST,  # the first event decides the owner; nothing later can move a run
        "workflow": Merge.FIRST,
        "workflow_version": Merge.FIRST,
        "task_id": Merge.FIRST,
        "status": RUN_STATUS,
        "input_json": Merge.FIRST,
        "output_json": Merge.NEW,
        "error": Merge.NEW,
        "created_at": Merge.MIN,
        "updated_at": Merge.MAX,
        "ended_at": Merge.FIRST,
        "cost_usd": Merge.ADD,
    },
    frozenset({"input_json", "output_json"}),
)
STEPS = Table(
    "steps",
    ("run_id", "step"),
    {
        "kind": Merge.FIRST,
        "status": STEP_STATUS,
        "attempts": Merge.MAX,
        "idempotency_key": Merge.NEW,
        "external_id": Merge.NEW,
        "output_json": Merge.NEW,
        "cost_usd": Merge.ADD,
        "started_at": Merge.MIN,
        "committed_at": Merge.FIRST,
        "updated_at": Merge.MAX,
        "agent_id": Merge.FIRST,
        "turns": Merge.MAX,  # an agent step's turns so far; null for other steps
    },
    frozenset({"output_json"}),
)
ATTEMPTS = Table(
    "attempts",
    ("run_id", "step", "call", "attempt"),  # call: the agent step's sub-step, '' for a plain step
    {
        "status": ATTEMPT_STATUS,
        "started_at": Merge.MIN,
        "ended_at": Merge.MAX,
        "failure_class": Merge.NEW,
        "error": Merge.NEW,
    },
)
# A case's status (the cases table; docs/quarantine.md): open until its one decision.
CASE_OPEN, CASE_DECIDED = "open", "decided"
CASE_STATUS = Status(rank={CASE_OPEN: 0, CASE_DECIDED: 1}, final=frozenset({CASE_DECIDED}))
# A case's evidence and its decision are facts that never change once known (FIRST): a replayed or late
# `quarantined` cannot reopen a decided case, and a second `quarantine_resolved` cannot re-decide one.
_CASE_FACTS = (
    "tenant_id", "run_id", "workflow", "step", "call", "attempt", "kind", "reason", "failure_class",
    "idempotency_key", "input_ref", "input_json", "output_ref", "output_json", "error", "opened_by",
    "opened_at", "deadline", "decision", "decided_by", "decided_at", "decision_reason",
    "decision_command_id", "decision_key", "decision_json",
)  # fmt: skip
CASES = Table(
    "cases",
    ("case_id",),
    {**dict.fromkeys(_CASE_FACTS, Merge.FIRST), "status": CASE_STATUS},
    frozenset({"input_json", "output_json", "decision_json"}),
)
EVENTS = Table("events", ("event_id",), json=frozenset({"body"}))
COSTS = Table("costs", ("event_id",))
ERRORS = Table("projection_errors", ("topic", "partition", "offset"))
# Append-only (migration 0008): insert-only here too, so a replayed message changes no row.
AUDIT = Table("audit", ("id",), json=frozenset({"detail"}))

TABLES: dict[str, Table] = {t.name: t for t in (RUNS, STEPS, ATTEMPTS, EVENTS, COSTS, ERRORS, CASES, AUDIT)}
# Every table a projection schema holds, in a stable order (for comparisons and listings).
ALL_TABLES = (*TABLES, "projector_offsets")
