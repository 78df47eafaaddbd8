"""The cases projection's pure part: the row a case's fact makes (docs/quarantine.md).

`quarantined` and `approval_requested` open a case with its evidence; `quarantine_resolved` closes it
with its decision. Each column merges by tables.CASES: evidence and decision are first-known facts and
`decided` is final, so a replayed or late fact never reopens nor re-decides a case.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import keel.events as ev
from keel import vocab
from keel.contracts import RunEvent
from services.projector.tables import CASE_DECIDED, CASE_OPEN
from services.projector.values import clean, json_value

OPENS = {ev.QUARANTINED: vocab.CASE_QUARANTINE, ev.APPROVAL_REQUESTED: vocab.CASE_APPROVAL}
CASE_EVENTS = frozenset({*OPENS, ev.QUARANTINE_RESOLVED})
_APPROVAL_ID = re.compile(r":approval-[0-9]+$")  # RUN:STEP:approval-N


def case_row(e: RunEvent) -> dict[str, Any] | None:
    """The cases upsert of a case's fact; None for any other fact."""
    if e.event in OPENS:
        return _opened(e, OPENS[e.event])
    if e.event == ev.QUARANTINE_RESOLVED:
        return _resolved(e)
    return None


def case_id_of(e: RunEvent) -> str:
    """The case's id as the fact names it; a quarantine written before cases had ids gets the id the
    contract gives one (RUN:STEP[:CALL]:ATTEMPT, or RUN:unprocessable for a run held as a whole)."""
    if e.quarantine is not None and e.quarantine.case_id:
        return str(clean(e.quarantine.case_id))
    if not e.step:
        return f"{e.run_id}:unprocessable"
    return ":".join(str(p) for p in (e.run_id, e.step, e.call, e.attempt) if p not in (None, ""))


def kind_of(case_id: str) -> str:
    return vocab.CASE_APPROVAL if _APPROVAL_ID.search(case_id) else vocab.CASE_QUARANTINE


def _opened(e: RunEvent, kind: str) -> dict[str, Any]:
    q = e.quarantine
    output = json_value(e.output_json)
    row = {
        **_where(e, case_id_of(e), kind),
        "step": e.step,
        "call": clean(e.call),
        "attempt": e.attempt,
        "status": CASE_OPEN,
        "reason": clean(q.reason) if q else clean(e.error),
        "failure_class": _failure_class(e),
        "idempotency_key": e.idempotency_key,
        "input_ref": e.input_ref,
        "input_json": json_value(e.input_json),
        "output_ref": e.output_ref,
        "output_json": output,
        "error": clean(e.error),
        "opened_by": e.source,
        "opened_at": e.ts,
    }
    if kind == vocab.CASE_APPROVAL:
        row["deadline"] = _deadline(output)
    return row


def _resolved(e: RunEvent) -> dict[str, Any]:
    q = e.quarantine
    case_id = case_id_of(e)
    record = json_value(e.output_json)
    record = record if isinstance(record, dict) else {}
    return {
        **_where(e, case_id, kind_of(case_id)),
        "step": e.step,
        "status": CASE_DECIDED,
        "decision": (q.decision if q else None) or record.get("decision"),
        "decided_by": (q.decided_by if q else None) or record.get("decided_by"),
        "decided_at": e.ts,
        "decision_reason": _text(record.get("reason")),
        "decision_command_id": _text(record.get("command_id")),
        # The key the step goes on with: the same for a retry, a new one for an edited input.
        "decision_key": e.idempotency_key or _text(record.get("key")),
        "decision_json": record or None,
    }


def _where(e: RunEvent, case_id: str, kind: str) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "tenant_id": e.tenant_id,
        "run_id": e.run_id,
        "workflow": e.workflow,
        "kind": kind,
    }


def _failure_class(e: RunEvent) -> str | None:
    details = (e.quarantine, e.tool, e.step_detail, e.retry)
    return next((d.failure_class for d in details if d is not None and d.failure_class), None)


def _deadline(output: Any) -> datetime | None:
    """An approval's deadline: `output_json.deadline` in epoch milliseconds."""
    ms = output.get("deadline") if isinstance(output, dict) else None
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(clean(value if isinstance(value, str) else json.dumps(value)))
