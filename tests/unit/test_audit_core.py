"""The audit trail's pure projection: which facts and commands are someone's action, and who."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from unit.test_projection_core import completed_after_retry

import keel.events as ev
from keel import auditlog
from keel.contracts import ControlCommand, QuarantineDetail, RunDetail
from services.projector.audit import STEP_IO, action_audit, command_audit, event_audit
from services.projector.core import Position, project, project_action, project_command

AT = "keel.run-events:3:17"


def test_a_submitted_run_names_who_requested_it():
    story = completed_after_retry("run-1")
    created = replace(story.events[0], run=RunDetail(status="created", requested_by="key:k1"))
    row = event_audit(created, AT)
    assert row is not None
    assert (row["id"], row["actor"], row["action"], row["tenant_id"], row["source"]) == (
        created.event_id, "key:k1", "run_submitted", "acme", AT,
    )  # fmt: skip
    assert "rerun_of" not in row["detail"]  # what the fact did not say is left out


def test_each_step_fact_says_what_it_read_and_wrote_and_which_service_wrote_it():
    story = completed_after_retry("run-1")
    rows = [event_audit(e, AT) for e in story.events]
    io = [(e, r) for e, r in zip(story.events, rows, strict=True) if e.event in STEP_IO]
    assert io and all(r is not None for _, r in io)
    for e, r in io:
        assert r is not None
        assert (r["action"], r["actor"], r["step"]) == (e.event, f"service:{e.source}", e.step)
        assert r["detail"].get("idempotency_key") == e.idempotency_key
    committed = [r for e, r in io if e.event == ev.STEP_COMMITTED and e.commit and e.commit.external_id]
    assert committed and all(r and r["detail"]["provider_id"] for r in committed)
    # Lifecycle facts nobody did (scheduled, started, model calls) are not audit rows.
    others = [r for e, r in zip(story.events, rows, strict=True) if e.event not in STEP_IO | {ev.CREATED}]
    assert others and all(r is None for r in others)


def test_a_decision_names_who_decided():
    story = completed_after_retry("run-1")
    q = QuarantineDetail(case_id="c1", reason="held", decision="retry", decided_by="operator:abc")
    e = story.add(ev.QUARANTINE_RESOLVED, "crm_upsert", 1, quarantine=q)
    row = event_audit(e, AT)
    assert row is not None and (row["actor"], row["action"]) == ("operator:abc", "case_decided")
    assert row["detail"] == {"case_id": "c1", "decision": "retry", "reason": "held"}


def test_a_control_command_is_audited_under_its_own_id_with_its_issuer():
    c = ControlCommand(
        command_id="cmd-1", run_id="run-1", tenant_id="acme", action="cancel", reason="stop\x00",
        issued_by="key:k1", issued_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    row = command_audit(c, "keel.control:0:5")
    assert (row["id"], row["actor"], row["action"], row["run_id"]) == (
        "command:cmd-1",
        "key:k1",
        "command:cancel",
        "run-1",
    )
    assert row["detail"] == {"command_id": "cmd-1", "reason": "stop\ufffd"}  # storable: no NUL
    # In the projection: the audit table only, with no event id (the row's own key dedups it).
    p = project_command(c, Position("keel.control", 0, 5))
    assert p.event_id is None and [ch.table for ch in p.changes] == ["audit"]


def test_the_projection_of_a_fact_carries_its_audit_row():
    story = completed_after_retry("run-1")
    tables = {ch.table for e in story.events for ch in project(e, Position("t", 0, 0)).changes}
    assert "audit" in tables


def test_an_audit_record_is_one_row_under_its_own_id_with_its_subject_and_detail():
    r = auditlog.record(
        auditlog.DEAD_LETTER_REDRIVEN,
        "key:ops-dev",
        "keel.run-requests:1:42",
        tenant_id="acme",
        run_id="run-1",
        detail={"to": "keel.run-requests:1:57", "forced": False},
    )
    row = action_audit(r, "keel.audit:0:3")
    assert row == {
        "id": f"action:{r.record_id}",
        "at": r.at,
        "tenant_id": "acme",
        "actor": "key:ops-dev",
        "action": "dead_letter_redriven",
        "run_id": "run-1",
        "step": None,
        "detail": {"subject": "keel.run-requests:1:42", "to": "keel.run-requests:1:57", "forced": False},
        "source": "keel.audit:0:3",
    }
    # The same record read again (a replay, another offset) is the same row id: nothing is added.
    assert action_audit(r, "keel.audit:0:9")["id"] == row["id"]
    p = project_action(r, Position("keel.audit", 0, 3))
    assert p.event_id is None and [ch.table for ch in p.changes] == ["audit"]


def test_a_registration_is_a_row_of_no_tenant_and_a_detail_that_is_not_an_object_is_kept():
    r = auditlog.record("workflow_registered", "cli:alice", "outbound_email@3")
    row = action_audit(r, "keel.audit:0:4")
    assert (row["tenant_id"], row["run_id"], row["detail"]) == (None, None, {"subject": "outbound_email@3"})
    odd = replace(r, detail_json='["not", "an object"]')
    assert action_audit(odd, "keel.audit:0:5")["detail"]["detail"] == ["not", "an object"]


def test_every_audit_record_gets_an_id_of_its_own():
    ids = {auditlog.record("tool_registered", "key:admin-dev", "crm@1").record_id for _ in range(100)}
    assert len(ids) == 100
