"""What a timeline line says of cases, decisions and control (docs/quarantine.md): the case a step was
held in, who decided what and why, an approval asked for, a refusal, a pause or resume, a fallback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from keel import events as ev

KINDS = frozenset(
    {ev.QUARANTINED, ev.APPROVAL_REQUESTED, ev.QUARANTINE_RESOLVED, ev.DECISION_REFUSED, ev.PAUSED,
     ev.RESUMED, ev.FALLBACK_CHOSEN, ev.CANCELED}
)  # fmt: skip


def _record(body: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(body.get("output_json") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parts(e: dict[str, Any]) -> list[str]:
    """The words a case's, a decision's or a control fact's line adds; [] for any other fact."""
    kind, body = e["event"], e.get("body") or {}
    q, record = body.get("quarantine") or {}, _record(body)
    if kind == ev.QUARANTINED:
        return [f"case {q.get('case_id')}", f"held: {q.get('reason')}"] if q else []
    if kind == ev.APPROVAL_REQUESTED:
        out = [f"case {q.get('case_id')}", f"asks: {q.get('reason')}"]
        if isinstance(record.get("deadline"), int | float):
            deadline = datetime.fromtimestamp(record["deadline"] / 1000, UTC).isoformat(timespec="seconds")
            out.append(f"deadline {deadline} then {record.get('on_timeout')}")
        return out
    if kind == ev.QUARANTINE_RESOLVED:
        who = q.get("decided_by") or record.get("decided_by")
        out = [
            f"{q.get('decision') or record.get('decision')} by {who}: {record.get('reason') or ''}".rstrip()
        ]
        if record.get("key") and record.get("key") != record.get("previous_key"):
            out.append("new key")
        return out
    if kind == ev.DECISION_REFUSED:
        return [f"refused {record.get('decision')} on {record.get('case_id')}"]
    if kind in (ev.PAUSED, ev.RESUMED, ev.CANCELED):
        reason = (body.get("run") or {}).get("reason")
        return [str(reason)] if reason else []
    if kind == ev.FALLBACK_CHOSEN:
        return [f"{record.get('from')} -> {record.get('to')} because {record.get('because')}"]
    return []
