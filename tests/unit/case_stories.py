"""Runs with cases (docs/quarantine.md), as the scheduler writes them: a send quarantined on an unknown
outcome, a refund waiting for approval; and the facts that close, refuse, pause and resume. Reused by
the projector's and the API's tests."""

from __future__ import annotations

import json
from typing import Any

from unit.test_projection_core import T0, Story

from keel import events as ev
from keel.contracts import QuarantineDetail, RunDetail, StepDetail, ToolDetail

SEND_INPUT = {"to": "ada@example.com", "subject": "Hi", "body": "Hello Ada"}
REFUND_INPUT = {"customer": "c-1", "amount": 25}
DEADLINE_MS = int(T0.timestamp() * 1000) + 3_600_000


def key_of(s: Story, step: str) -> str:
    return f"{s.tenant}|{s.workflow}|{s.run_id}|{step}|sha256:{'1' * 64}"


def quarantined_send(run_id: str, tenant: str = "acme") -> Story:
    """outbound_email: its send_email sent, no answer, under `none`: held. Case RUN:send_email:1."""
    s = Story(run_id, tenant).start({"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"})
    s.llm("draft_email", 0.001, {"subject": "Hi", "body": "Hello Ada"})
    key = key_of(s, "send_email")
    s.add(ev.STEP_STARTED, "send_email", 1, step_detail=StepDetail(kind="tool"), idempotency_key=key)
    s.add(ev.TOOL_CALLED, "send_email", 1, idempotency_key=key, tool=ToolDetail(tool="email@1"))
    s.add(
        ev.TOOL_FAILED,
        "send_email",
        1,
        idempotency_key=key,
        error="timeout after send",
        tool=ToolDetail(tool="email@1", failure_class="unknown_outcome"),
    )
    s.add(
        ev.QUARANTINED,
        "send_email",
        1,
        idempotency_key=key,
        error="timeout after send",
        input_json=json.dumps(SEND_INPUT),
        input_ref="sha256:" + "2" * 64,
        tool=ToolDetail(tool="email@1", failure_class="unknown_outcome"),
        run=RunDetail(status="quarantined", reason="unknown outcome"),
        quarantine=QuarantineDetail(
            case_id=f"{run_id}:send_email:1",
            reason="unknown outcome on a none tool",
            failure_class="unknown_outcome",
        ),
    )
    return s


def awaiting_approval(run_id: str, tenant: str = "acme") -> Story:
    """A refund waiting for a human's yes. Case RUN:refund:approval-1."""
    s = Story(run_id, tenant, "support_refund").start({"customer": "c-1"})
    s.add(
        ev.APPROVAL_REQUESTED,
        "refund",
        0,
        idempotency_key=key_of(s, "refund"),
        input_json=json.dumps(REFUND_INPUT),
        input_ref="sha256:" + "3" * 64,
        output_json=json.dumps({"deadline": DEADLINE_MS, "on_timeout": "deny"}),
        quarantine=QuarantineDetail(case_id=f"{run_id}:refund:approval-1", reason="Refund 25 to c-1?"),
    )
    return s


def resolve(
    s: Story, case_id: str, decision: str, command_id: str, by: str = "operator:abc", **record: Any
) -> Story:
    """The scheduler's `quarantine_resolved`: the decision record in output_json."""
    step = case_id.split(":")[1]
    key = record.pop("key", key_of(s, step))
    body = {
        "case_id": case_id,
        "decision": decision,
        "reason": record.pop("reason", "checked the provider"),
        "decided_by": by,
        "command_id": command_id,
        "previous_key": key_of(s, step),
        "key": key,
        **record,
    }
    s.add(
        ev.QUARANTINE_RESOLVED,
        step,
        1,
        extra=command_id,
        idempotency_key=key,
        output_json=json.dumps(body),
        input_json=json.dumps(body["input"]) if "input" in body else None,
        quarantine=QuarantineDetail(case_id=case_id, reason="decided", decision=decision, decided_by=by),
    )
    return s


def refuse(s: Story, case_id: str, decision: str, command_id: str, why: str) -> Story:
    s.add(
        ev.DECISION_REFUSED,
        case_id.split(":")[1],
        extra=command_id,
        error=why,
        output_json=json.dumps({"case_id": case_id, "decision": decision, "command_id": command_id}),
    )
    return s


def pause(s: Story, by: str = "tenant:acme") -> Story:
    s.add(ev.PAUSED, extra=f"{len(s.events)}", run=RunDetail(status="paused", reason=f"{by}: maintenance"))
    return s


def resume(s: Story, by: str = "tenant:acme") -> Story:
    s.add(ev.RESUMED, extra=f"{len(s.events)}", run=RunDetail(status="running", reason=f"{by}: done"))
    return s
