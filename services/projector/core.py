"""The projector's pure core: one RunEvent (and where it sits in the log) -> the row upserts it makes.

Only values carried by the event are used (never the clock), and every column merges by a fixed rule
(tables.py), so applying the same log in the same order always yields the same rows: a rebuild equals
the live tables. Unknown event kinds are kept in `events` and otherwise ignored.

An agent step's facts name their sub-step (`call`: `turn-N`, `turn-N.call-I`): each sub-step has its
own attempts; the step's row is the agent step as a whole, committed only by its final answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any

import keel.events as ev
from keel import vocab
from keel.contracts import AuditRecord, ControlCommand, RunEvent
from keel.provenance import TENANT_MISMATCH
from services.projector.audit import action_audit, command_audit, event_audit, source_of
from services.projector.cases import case_row
from services.projector.values import MICROS_PER_USD, clean, cost_of, json_value, jsonable, micros_of

RUN_STATUS_OF = {
    ev.CREATED: vocab.CREATED,
    ev.SCHEDULED: vocab.SCHEDULED,
    ev.STARTED: vocab.RUNNING,
    ev.COMPLETED: vocab.COMPLETED,
    ev.FAILED: vocab.FAILED,
    ev.CANCELED: vocab.CANCELED,
    ev.QUARANTINED: vocab.QUARANTINED,
    ev.QUARANTINE_RESOLVED: vocab.RUNNING,
    ev.PAUSED: vocab.PAUSED,
    ev.RESUMED: vocab.RUNNING,
}
STEP_STATUS_OF = {
    ev.STEP_STARTED: vocab.RUNNING,
    ev.STEP_FAILED: vocab.FAILED,
    ev.TOOL_FAILED: vocab.FAILED,
    ev.RETRY_SCHEDULED: vocab.RETRYING,
    ev.STEP_COMMITTED: vocab.COMMITTED,
    ev.FAILED: vocab.FAILED,
}
ATTEMPT_STATUS_OF = {
    ev.STEP_STARTED: vocab.RUNNING,
    ev.TOOL_CALLED: vocab.RUNNING,
    ev.MODEL_CALLED: vocab.RUNNING,
    ev.TOOL_SUCCEEDED: vocab.SUCCEEDED,
    ev.STEP_FAILED: vocab.FAILED,
    ev.TOOL_FAILED: vocab.FAILED,
    ev.STEP_COMMITTED: vocab.COMMITTED,
}
# A sub-step's commit does not commit its agent step, nor change its status: the step goes on (running
# since the sub-step started), and a late copy of the commit re-issued by the ledger reopens nothing.
SUB_STEP_STATUS_OF = {k: v for k, v in STEP_STATUS_OF.items() if k != ev.STEP_COMMITTED}
KNOWN = frozenset(RUN_STATUS_OF) | frozenset(STEP_STATUS_OF) | frozenset(ATTEMPT_STATUS_OF)
ENDS_ATTEMPT = frozenset({ev.TOOL_SUCCEEDED, ev.STEP_FAILED, ev.TOOL_FAILED, ev.STEP_COMMITTED})
SCHEDULER = "scheduler"  # the source of an agent step's final commit
AGENT_KIND = "agent"  # the workflow step kind (keel.workflows.model.StepKind)
PLAIN = ""  # the attempts' `call` of a plain step: a key column cannot be null
_SUB_STEP = re.compile(r"turn-([1-9][0-9]*)(\.call-(0|[1-9][0-9]*))?")


def turn_of(call: str | None) -> int | None:
    """N of `turn-N` or `turn-N.call-I`; None for a plain step or a name this projector cannot read."""
    m = _SUB_STEP.fullmatch(call or "")
    return int(m.group(1)) if m else None


def is_turn(call: str | None) -> bool:
    """A model turn (`turn-N`), as opposed to one of its tool calls."""
    m = _SUB_STEP.fullmatch(call or "")
    return bool(m and m.group(2) is None)


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class RowChange:
    """An upsert: the key columns plus the columns this fact sets; each merges by its table's rule."""

    table: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Projection:
    """Everything one message changes. `event_id` lets the store apply a re-delivered fact only once."""

    at: Position
    event_id: str | None
    changes: tuple[RowChange, ...]


def project(event: RunEvent, at: Position) -> Projection:
    e, cost = event, cost_of(event.cost_usd_est)
    changes = [RowChange("events", _event_row(e, at, cost))]
    if e.event in KNOWN:
        changes.append(RowChange("runs", _run_row(e, cost)))
        if e.step:
            changes.append(RowChange("steps", _step_row(e, cost)))
            if e.attempt >= 1 and e.event in ATTEMPT_STATUS_OF and not _agent_answer(e):
                changes.append(RowChange("attempts", _attempt_row(e)))
        micros = micros_of(e.cost_micros, cost)
        if micros is not None:
            changes.append(RowChange("costs", _cost_row(e, cost, micros)))
    case = case_row(e)
    if case is not None:
        changes.append(RowChange("cases", case))
    audit = event_audit(e, source_of(at.topic, at.partition, at.offset))
    if audit is not None:
        changes.append(RowChange("audit", audit))
    return Projection(at, e.event_id, tuple(changes))


def project_command(c: ControlCommand, at: Position) -> Projection:
    """A control command (keel.control) changes nothing but the audit trail: its outcome is a fact
    on keel.run-events, projected from there."""
    audit = command_audit(c, source_of(at.topic, at.partition, at.offset))
    return Projection(at, None, (RowChange("audit", audit),))


def project_action(r: AuditRecord, at: Position) -> Projection:
    """An audit record (keel.audit) is a row of the audit trail and nothing else."""
    return Projection(
        at, None, (RowChange("audit", action_audit(r, source_of(at.topic, at.partition, at.offset))),)
    )


def run_tenants(projections: Sequence[Projection]) -> set[str]:
    """The runs whose facts these projections write (their recorded tenant is looked up once)."""
    return {c.values["run_id"] for p in projections for c in p.changes if c.table == "events"}


def guard_tenants(projections: Sequence[Projection], recorded: Mapping[str, str]) -> list[Projection]:
    """A fact of another tenant than its run's recorded one (`recorded`: run -> tenant, as stored; a run
    first seen here takes its first fact's tenant) is not projected: it is kept as a projection error,
    so that no forged fact changes another tenant's run, steps or costs (docs/tenancy.md)."""
    tenants, out = dict(recorded), []
    for p in projections:
        row = next((c.values for c in p.changes if c.table == "events"), None)
        if row is None:
            out.append(p)
            continue
        owner = tenants.setdefault(row["run_id"], row["tenant_id"])
        if owner == row["tenant_id"]:
            out.append(p)
            continue
        tenant, run = row["tenant_id"], row["run_id"]
        reason = f"a fact of tenant {tenant!r} for run {run} of tenant {owner!r}: not projected"
        out.append(error_projection(p.at, reason, TENANT_MISMATCH, None, None))
    return out


def error_projection(
    at: Position, reason: str, error_class: str, key: bytes | None, value: bytes | None
) -> Projection:
    """A message that cannot be projected: kept with its origin and bytes, then skipped."""
    row = {
        "topic": at.topic,
        "partition": at.partition,
        "offset": at.offset,
        "error_class": error_class,
        "reason": clean(reason),
        "key": clean(key.decode(errors="replace")) if key else None,
        "value": value,
    }
    return Projection(at, None, (RowChange("projection_errors", row),))


def _run_row(e: RunEvent, cost: Decimal | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": e.run_id,
        "tenant_id": e.tenant_id,
        "workflow": e.workflow,
        "workflow_version": e.workflow_version,
        "task_id": e.task_id,
        "created_at": e.ts,
        "updated_at": e.ts,
        "cost_usd": cost or Decimal(0),
    }
    if e.event in RUN_STATUS_OF:
        row["status"] = RUN_STATUS_OF[e.event]
    if e.event == ev.CREATED:
        row["input_json"] = json_value(e.input_json)
    if e.event in ev.TERMINAL:
        row.update(ended_at=e.ts, error=clean(e.error or (e.run.reason if e.run else None)))
        if e.event == ev.COMPLETED:
            row["output_json"] = json_value(e.output_json)
    return row


def _step_row(e: RunEvent, cost: Decimal | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": e.run_id,
        "step": e.step,
        "updated_at": e.ts,
        "cost_usd": cost or Decimal(0),
        "agent_id": e.agent_id,
    }
    if e.call is not None:
        return _agent_step_row(e, row)
    row["idempotency_key"] = e.idempotency_key
    if e.event in STEP_STATUS_OF:
        row["status"] = STEP_STATUS_OF[e.event]
    if e.event == ev.STEP_STARTED:
        row.update(started_at=e.ts, attempts=e.attempt, kind=e.step_detail.kind if e.step_detail else None)
    if e.event == ev.TOOL_SUCCEEDED and e.tool is not None:
        row["external_id"] = e.tool.external_id
    if e.event == ev.STEP_COMMITTED:
        row["output_json"] = json_value(e.output_json)
        if e.commit is not None:
            row.update(external_id=e.commit.external_id, committed_at=e.commit.committed_at)
    return row


def _agent_answer(e: RunEvent) -> bool:
    """The scheduler's commit of an agent step's final answer: no attempt of its own (its turns and
    calls have theirs), whatever attempt number it carries. Every other commit is an executor's or
    the ledger's."""
    return e.event == ev.STEP_COMMITTED and e.call is None and e.source == SCHEDULER


def _agent_step_row(e: RunEvent, row: dict[str, Any]) -> dict[str, Any]:
    """A sub-step's fact about its agent step: its status while under way, the turns taken so far.
    Keys, ids and outputs of the sub-steps stay on their attempts and events: the step's own output
    is the final answer, set by the step_committed without a `call`."""
    row.update(kind=AGENT_KIND if e.event == ev.STEP_STARTED else None, turns=turn_of(e.call))
    if e.event in SUB_STEP_STATUS_OF:
        row["status"] = SUB_STEP_STATUS_OF[e.event]
    if e.event == ev.STEP_STARTED:
        row["started_at"] = e.ts
    return row


def _attempt_row(e: RunEvent) -> dict[str, Any]:
    # A turn's model_called is its commit point: nothing else commits a model turn.
    turn_committed = e.event == ev.MODEL_CALLED and is_turn(e.call)
    row: dict[str, Any] = {
        "run_id": e.run_id,
        "step": e.step,
        "call": clean(e.call) or PLAIN,
        "attempt": e.attempt,
        "status": vocab.COMMITTED if turn_committed else ATTEMPT_STATUS_OF[e.event],
        "started_at": e.ts,
    }
    if e.event in ENDS_ATTEMPT or turn_committed:
        row["ended_at"] = e.ts
    if e.event in (ev.STEP_FAILED, ev.TOOL_FAILED):
        row.update(failure_class=failure_class(e), error=clean(e.error))
    return row


def _cost_row(e: RunEvent, cost: Decimal | None, micros: int) -> dict[str, Any]:
    """One fact's cost: its own integer micro-dollars (what sums use), its USD figure as it said it (or
    the micros in USD when it said none), and every column a cost is grouped by."""
    return {
        "event_id": e.event_id,
        "tenant_id": e.tenant_id,
        "workflow": e.workflow,
        "run_id": e.run_id,
        "step": e.step,
        "agent_id": e.agent_id,
        "model": e.model,
        "cost_usd": cost if cost is not None else Decimal(micros) / MICROS_PER_USD,
        "ts": e.ts,
        "call": clean(e.call),
        "task_id": e.task_id,
        "cost_micros": micros,
        "day": e.ts.astimezone(UTC).date(),
    }


def _event_row(e: RunEvent, at: Position, cost: Decimal | None) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "run_id": e.run_id,
        "tenant_id": e.tenant_id,
        "topic": at.topic,
        "partition": at.partition,
        "offset": at.offset,
        "ts": e.ts,
        "event": e.event,
        "step": e.step,
        "attempt": e.attempt,
        "source": e.source,
        "idempotency_key": e.idempotency_key,
        "external_id": external_id(e),
        "failure_class": failure_class(e),
        "error": clean(e.error),
        "cost_usd": cost,
        "body": jsonable(e.to_dict()),
        "call": clean(e.call),
    }


def external_id(e: RunEvent) -> str | None:
    return (e.commit.external_id if e.commit else None) or (e.tool.external_id if e.tool else None)


def failure_class(e: RunEvent) -> str | None:
    details = (e.tool, e.step_detail, e.retry, e.quarantine)
    return next((d.failure_class for d in details if d is not None and d.failure_class), None)
