"""The audit trail end to end (docs/tenancy.md section 5): runs submitted, approved and cancelled over the
API show up in GET /v1/audit with who did it, checked against the facts on keel.run-events (the ground
truth), and a tenant never sees another tenant's rows."""

from __future__ import annotations

from typing import Any

import pytest
from harness import E2E_ENV
from helpers import wait_for

from keel.settings import Settings
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
URL = E2E_ENV["KEEL_API_URL"]
IO_KINDS = ("tool_called", "tool_succeeded", "tool_failed", "step_committed")


def as_key(stack: Settings, key: str) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": key})


def audit(who: Settings, **params: Any) -> list[dict[str, Any]]:
    return cli_runs.api(who, "GET", "/v1/audit", params={"limit": 500, **params})["audit"]  # type: ignore[no-any-return]


def approval_case(who: Settings, run_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def opened() -> bool:
        found[:] = cli_runs.api(who, "GET", "/v1/approvals", params={"run_id": run_id})["cases"]
        return bool(found)

    wait_for(opened, 30, f"the approval of run {run_id}")
    return found[0]


def audited(who: Settings, run_id: str, want: set[str]) -> list[dict[str, Any]]:
    """The run's audit rows, once their ids include `want` (the projector trails the topics)."""
    rows: list[dict[str, Any]] = []

    def arrived() -> bool:
        rows[:] = audit(who, run_id=run_id)
        return want <= {r["id"] for r in rows}

    wait_for(arrived, 30, f"the audit rows of run {run_id}")
    return rows


def test_approved_and_cancelled_runs_are_audited_with_their_actors(stack, sims, events):
    acme, globex, ops = (as_key(stack, k) for k in ("acme-dev-key", "globex-dev-key", "ops-dev-key"))
    refund = {"charge_id": "ch_audit", "amount_cents": 700}
    approved = cli_runs.submit(acme, "approve_refund", refund)
    case = approval_case(acme, approved)
    body = {"reason": "ok", "input_ref": case["input_ref"], "idempotency_key": case["idempotency_key"]}
    decided = cli_runs.api(acme, "POST", f"/v1/approvals/{case['case_id']}/approve", json=body)
    approve_id = decided.get("decision_command_id") or decided["command_id"]
    assert events.wait_terminal(approved) == "completed"

    cancelled = cli_runs.submit(acme, "approve_refund", {**refund, "charge_id": "ch_audit_2"})
    approval_case(acme, cancelled)  # waiting for a human: the cancel finds it under way
    cancel = cli_runs.api(acme, "POST", f"/v1/runs/{cancelled}/cancel", json={"reason": "changed my mind"})
    assert events.wait_terminal(cancelled) == "canceled"

    # Ground truth: the facts on the topic, and the command ids the API answered with.
    log = events.of(approved)
    [created] = [e for e in log if e.event == "created"]
    [resolved] = [e for e in log if e.event == "quarantine_resolved"]
    io = {e.event_id: e for e in log if e.event in IO_KINDS}
    assert io, "the approved refund called its tool"
    want = {created.event_id, resolved.event_id, f"command:{approve_id}", *io}
    rows = {r["id"]: r for r in audited(acme, approved, want)}
    assert rows[created.event_id]["action"] == "run_submitted"
    assert rows[created.event_id]["actor"] == created.run.requested_by and created.run.requested_by
    assert rows[resolved.event_id]["action"] == "case_decided"
    assert rows[resolved.event_id]["actor"] == resolved.quarantine.decided_by
    assert rows[f"command:{approve_id}"]["action"] == "command:decide"
    assert rows[f"command:{approve_id}"]["actor"] == "key:acme-dev"  # the principal id of acme's key
    for event_id, e in io.items():
        row = rows[event_id]
        assert (row["action"], row["actor"], row["step"]) == (e.event, f"service:{e.source}", e.step)
        assert row["detail"].get("idempotency_key") == e.idempotency_key
        provider_id = (e.commit.external_id if e.commit else None) or (e.tool.external_id if e.tool else None)
        assert row["detail"].get("provider_id") == provider_id
    assert {r["tenant_id"] for r in rows.values()} == {"acme"}
    assert len(rows) == len({r["source"] for r in rows.values()})  # one row per message read

    [cancel_row] = [
        r
        for r in audited(acme, cancelled, {f"command:{cancel['command_id']}"})
        if r["action"] == "command:cancel"
    ]
    assert (cancel_row["actor"], cancel_row["detail"]["reason"]) == ("key:acme-dev", "changed my mind")

    # Another tenant sees none of it, by run or in its whole trail; an operator sees both runs.
    assert audit(globex, run_id=approved) == [] and audit(globex, run_id=cancelled) == []
    assert "acme" not in {r["tenant_id"] for r in audit(globex)}
    for run_id in (approved, cancelled):  # by run: the trail may hold more than a page of older rows
        assert {r["tenant_id"] for r in audit(ops, run_id=run_id)} == {"acme"}
