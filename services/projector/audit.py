"""The audit trail's projection (docs/tenancy.md section 5): who or what did what, from the facts on
keel.run-events, the commands on keel.control and the other actions on keel.audit (keel.auditlog), as
rows of the append-only `audit` table.

A row's id is the fact's event id, the command's command id or the audit record's id, so a message read
twice (a replay, an at-least-once copy at another offset) adds no second row: the first in log order is
kept, which is what a rebuild keeps too. `source` says where it was read (topic:partition:offset).
Pure: values carried by the message only, never the clock.
"""

from __future__ import annotations

from typing import Any

import keel.events as ev
from keel.contracts import AuditRecord, ControlCommand, RunEvent
from services.projector.values import clean, json_value, jsonable

RUN_SUBMITTED = "run_submitted"
CASE_DECIDED = "case_decided"
# What each step read and wrote: the facts of the tool boundary and of the commit point.
STEP_IO = frozenset({ev.TOOL_CALLED, ev.TOOL_SUCCEEDED, ev.TOOL_FAILED, ev.STEP_COMMITTED})
COMMAND_PREFIX = "command:"  # a control command's action: command:cancel, command:decide, ...
ACTION_PREFIX = "action:"  # the row of an audit record (keel.audit): action:<record_id>
SERVICE_PREFIX = "service:"  # the actor of a fact a service wrote on its own (no principal behind it)


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def event_audit(e: RunEvent, source: str) -> dict[str, Any] | None:
    """The audit row of a run event, or None for a fact that is no one's action worth recording."""
    if e.event == ev.CREATED:
        run = e.run
        actor = run.requested_by if run else None
        detail = {"workflow": e.workflow, "workflow_version": e.workflow_version, "task_id": e.task_id,
                  "input_ref": e.input_ref, "rerun_of": run.rerun_of if run else None}  # fmt: skip
        return _row(e, RUN_SUBMITTED, actor, detail, source)
    if e.event == ev.QUARANTINE_RESOLVED and e.quarantine is not None:
        q = e.quarantine
        detail = {"case_id": q.case_id, "decision": q.decision, "reason": q.reason}
        return _row(e, CASE_DECIDED, q.decided_by, detail, source)
    if e.event in STEP_IO:
        detail = {
            "attempt": e.attempt,
            "call": e.call,
            "idempotency_key": e.idempotency_key,
            "input_ref": e.input_ref,
            "output_ref": e.output_ref,
            "tool": e.tool.tool if e.tool else None,
            "provider_id": (e.commit.external_id if e.commit else None)
            or (e.tool.external_id if e.tool else None),
            "failure_class": e.tool.failure_class if e.tool else None,
            "already_committed": (e.tool.already_committed if e.tool else None)
            or (e.commit.duplicate if e.commit else None),
        }
        return _row(e, e.event, SERVICE_PREFIX + e.source, detail, source)
    return None


def command_audit(c: ControlCommand, source: str) -> dict[str, Any]:
    """Every control command is someone's action: a principal's (issued_by) or a service's."""
    detail = {"command_id": c.command_id, "reason": c.reason, "args": json_value(c.args_json)}
    return {
        # Prefixed: a command id and an event id never name the same row (format frozen: rows keep it).
        "id": clean(COMMAND_PREFIX + c.command_id),
        "at": c.issued_at,
        "tenant_id": clean(c.tenant_id),
        "actor": clean(c.issued_by),
        "action": clean(COMMAND_PREFIX + c.action),
        "run_id": clean(c.run_id),
        "step": clean(c.step),
        "detail": _compact(detail),
        "source": source,
    }


def action_audit(r: AuditRecord, source: str) -> dict[str, Any]:
    """An audit record is someone's action by definition: one row, its subject first in the detail."""
    said = json_value(r.detail_json)  # a JSON object by contract; anything else is kept, not lost
    detail = {"subject": r.subject, **(said if isinstance(said, dict) else {"detail": said})}
    return {
        # Prefixed like a command's: never the id of a fact's or a command's row (format frozen).
        "id": clean(ACTION_PREFIX + r.record_id),
        "at": r.at,
        "tenant_id": clean(r.tenant_id),
        "actor": clean(r.actor),
        "action": clean(r.action),
        "run_id": clean(r.run_id),
        "step": None,
        "detail": _compact(detail),
        "source": source,
    }


def _row(e: RunEvent, action: str, actor: str | None, detail: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "id": e.event_id,
        "at": e.ts,
        "tenant_id": e.tenant_id,
        "actor": clean(actor),
        "action": action,
        "run_id": e.run_id,
        "step": clean(e.step),
        "detail": _compact(detail),
        "source": source,
    }


def _compact(detail: dict[str, Any]) -> dict[str, Any]:
    """Only what the message said: absent values are left out, not stored as nulls."""
    kept: dict[str, Any] = jsonable({k: v for k, v in detail.items() if v is not None})
    return kept
