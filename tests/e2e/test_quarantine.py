"""A way out of quarantine, end to end (docs/quarantine.md): cases opened by real faults, decided over the
API by an operator, approvals bound to their payload with a deadline that survives a scheduler kill -9,
and cancel and pause around a call in flight. Every count is the providers' own (`/_stats`)."""

from __future__ import annotations

import json
import time

import pytest
from harness import E2E_ENV
from helpers import wait_for
from test_runs import submit

from infra.simulators.dedup import effect_id
from keel.idempotency import content_ref
from keel.settings import Settings
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
URL = E2E_ENV["KEEL_API_URL"]
REFUND = {"charge_id": "ch_9z8y7x", "amount_cents": 4200}
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


@pytest.fixture
def ops(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "ops-dev-key"})


@pytest.fixture
def acme(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "acme-dev-key"})


@pytest.fixture
def globex(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "globex-dev-key"})


def _case(ops: Settings, run_id: str, kind: str = "quarantine") -> dict:
    """The run's open case, once the projection has it."""
    found: list[dict] = []

    def opened() -> bool:
        cases = cli_runs.api(ops, "GET", "/v1/quarantine", params={"run_id": run_id, "kind": kind})["cases"]
        found[:] = cases
        return bool(cases)

    wait_for(opened, 30, f"a {kind} case of run {run_id}")
    [case] = found
    return case


def _decide(ops: Settings, case_id: str, **body: object) -> dict:
    return cli_runs.api(ops, "POST", f"/v1/quarantine/{case_id}/decide", json=body)


def _timeline(who: Settings, run_id: str) -> str:
    """The run's timeline as `keel timeline` prints it, read through the API with `who`'s key."""
    return cli_runs.format_timeline(cli_runs.api(who, "GET", f"/v1/runs/{run_id}/events")["events"])


def _refunds(sims, run_id: str) -> dict:
    return sims.stats("payments")["by_effect"].get(effect_id("acme", run_id, "refund"), 0)


def _drifted(stack, sims, events) -> str:
    """A refund whose provider refunds and then answers without its refund_id: a case, one refund."""
    sims.fault("payments", kind="null_field", field="refund_id", times=1)
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "quarantined"
    assert _refunds(sims, run_id) == 1
    return run_id


def test_a_drift_case_shows_its_evidence_and_a_retry_under_the_same_key_refunds_once(
    stack, sims, events, ops, acme
):
    run_id = _drifted(stack, sims, events)
    case = _case(ops, run_id)
    assert case["failure_class"] == "validation" and case["step"] == "refund"
    shown = cli_runs.api(ops, "GET", f"/v1/quarantine/{case['case_id']}")
    assert "$.refund_id" in (shown["error"] or "")
    assert shown["input"] == {**REFUND, "reason": "requested_by_customer"}  # what the provider was sent
    assert shown["output"]["refund_id"] is None  # and what it answered
    assert [a["attempt"] for a in shown["attempts"]] == [1]

    decided = _decide(ops, case["case_id"], decision="retry", reason="the provider fixed its answers")
    assert decided["decision"] == "retry" and decided["decided_by"] == "key:ops-dev"  # the principal id
    assert events.wait_terminal(run_id, 60) in ("quarantined",)  # the held event is still first
    wait_for(lambda: "completed" in events.kinds(run_id), 60, "the run to complete after the retry")
    assert _refunds(sims, run_id) == 1  # the provider answered the same key: no second refund
    [resolved] = [e for e in events.of(run_id) if e.event == "quarantine_resolved"]
    assert resolved.quarantine.decided_by == decided["decided_by"]
    assert resolved.idempotency_key == case["idempotency_key"]
    assert "retry by key:ops-dev: the provider fixed its answers" in _timeline(acme, run_id)


def test_an_edit_of_a_case_whose_effect_exists_is_refused_without_acknowledging_a_second_effect(
    stack, sims, events, ops
):
    run_id = _drifted(stack, sims, events)
    case = _case(ops, run_id)
    with pytest.raises(cli_runs.ApiError, match="409|400"):
        _decide(ops, case["case_id"], decision="edit", input={**REFUND, "reason": "duplicate"}, reason="x")
    assert _refunds(sims, run_id) == 1
    assert "completed" not in events.kinds(run_id)


def test_an_input_the_tool_refuses_is_held_and_an_edit_sends_it_once_under_a_new_key(
    stack, sims, events, ops, acme
):
    # amount_cents 0 breaks refund@1's input schema (minimum 1): the adapters send nothing and the case
    # is held; the operator's corrected input is checked against the schema first and goes out under a
    # new key, exactly once.
    run_id = submit(stack, "refund_once", {**REFUND, "amount_cents": 0})
    assert events.wait_terminal(run_id) == "quarantined"
    assert _refunds(sims, run_id) == 0
    case = _case(ops, run_id)
    shown = cli_runs.api(ops, "GET", f"/v1/quarantine/{case['case_id']}")
    assert "amount_cents" in (shown["error"] or "")
    # the case shows the payload the tool refused (what an edit replaces), by value and by ref
    assert shown["input"] == {**REFUND, "amount_cents": 0, "reason": "requested_by_customer"}
    assert shown["input_ref"] == content_ref(shown["input"])
    with pytest.raises(cli_runs.ApiError, match="400"):  # still breaks the tool's input schema
        _decide(ops, case["case_id"], decision="edit", input={**REFUND, "amount_cents": -5}, reason="typo")

    edited = {**REFUND, "amount_cents": 4100, "reason": "requested_by_customer"}
    decided = _decide(ops, case["case_id"], decision="edit", input=edited, reason="partial refund agreed")
    assert decided["decision"] == "edit"
    wait_for(lambda: "completed" in events.kinds(run_id), 60, "the run to complete after the edit")
    stats = sims.stats("payments")
    assert _refunds(sims, run_id) == 1
    [resolved] = [e for e in events.of(run_id) if e.event == "quarantine_resolved"]
    record = json.loads(resolved.output_json)
    assert record["previous_key"] == case["idempotency_key"] != record["key"]
    assert stats["by_key"].get(record["key"]) == 1 and record["previous_key"] not in stats["by_key"]
    assert "edit by key:ops-dev: partial refund agreed" in _timeline(acme, run_id)


def test_skip_with_a_supplied_output_finishes_the_run_with_it(stack, sims, events, ops, acme):
    run_id = _drifted(stack, sims, events)
    case = _case(ops, run_id)
    supplied = {
        "refund_id": "re_from_the_dashboard",
        "charge_id": REFUND["charge_id"],
        "amount_cents": 4200,
        "status": "succeeded",
    }
    decided = _decide(ops, case["case_id"], decision="skip", output=supplied, reason="found in the dashboard")
    assert decided["decision"] == "skip"
    wait_for(lambda: "completed" in events.kinds(run_id), 30, "the run to complete with the output")
    [done] = [e for e in events.of(run_id) if e.event == "completed"]
    assert "re_from_the_dashboard" in done.output_json
    assert _refunds(sims, run_id) == 1
    assert "skip by key:ops-dev: found in the dashboard" in _timeline(acme, run_id)


def test_fail_ends_the_run_failed_and_a_second_decision_is_refused(stack, sims, events, ops, acme):
    run_id = _drifted(stack, sims, events)
    case = _case(ops, run_id)
    with pytest.raises(cli_runs.ApiError, match="403"):  # deciding a case is an operator's
        _decide(acme, case["case_id"], decision="fail", reason="tenant")
    _decide(ops, case["case_id"], decision="fail", reason="refund handled by hand")
    wait_for(lambda: "failed" in events.kinds(run_id), 30, "the run to fail")
    [ended] = [e for e in events.of(run_id) if e.event == "failed"]
    assert "key:ops-dev" in ended.run.reason and "refund handled by hand" in ended.run.reason
    with pytest.raises(cli_runs.ApiError, match="409"):
        _decide(ops, case["case_id"], decision="retry", reason="too late")
    assert "fail by key:ops-dev: refund handled by hand" in _timeline(acme, run_id)


def test_an_approval_for_one_payload_cannot_release_another(stack, sims, events, acme):
    small = submit(stack, "approve_refund", {"charge_id": "ch_small", "amount_cents": 100})
    large = submit(stack, "approve_refund", {"charge_id": "ch_large", "amount_cents": 990000})
    small_case, large_case = _case(acme, small, "approval"), _case(acme, large, "approval")
    wrong = {"input_ref": small_case["input_ref"], "idempotency_key": small_case["idempotency_key"]}
    with pytest.raises(cli_runs.ApiError, match="409|400"):
        cli_runs.api(
            acme, "POST", f"/v1/approvals/{large_case['case_id']}/approve", json={"reason": "ok", **wrong}
        )
    right = {"input_ref": small_case["input_ref"], "idempotency_key": small_case["idempotency_key"]}
    cli_runs.api(
        acme, "POST", f"/v1/approvals/{small_case['case_id']}/approve", json={"reason": "ok", **right}
    )
    wait_for(lambda: "completed" in events.kinds(small), 30, "the approved refund")
    assert _refunds(sims, small) == 1 and _refunds(sims, large) == 0


def test_cancel_lets_the_call_in_flight_commit_and_nothing_after_it_starts(stack, sims, events, acme, globex):
    # The CRM logs the activity at once and holds its answer past the adapters' timeout: when the cancel
    # comes, the call is in flight and its outcome will be unknown. CRM is a lookup tool, so the call is
    # settled by asking again under the same key: its effect is committed, never made twice.
    sims.fault("crm", kind="accept_then_timeout", ms=3000, times=1)
    run_id = cli_runs.submit(acme, "outbound_email", LEAD)
    wait_for(
        lambda: any(e.event == "tool_called" and e.step == "log_to_crm" for e in events.of(run_id)),
        30,
        "the CRM call to be in flight",
    )
    with pytest.raises(cli_runs.ApiError, match="404"):  # another tenant cannot even see it
        cli_runs.api(globex, "POST", f"/v1/runs/{run_id}/cancel", json={"reason": "not mine"})
    cli_runs.api(acme, "POST", f"/v1/runs/{run_id}/cancel", json={"reason": "customer unsubscribed"})
    wait_for(lambda: "canceled" in events.kinds(run_id), 30, "the run to end canceled")
    log = events.of(run_id)
    assert any(e.event == "step_committed" and e.step == "log_to_crm" for e in log)  # kept
    assert not any(e.step == "send_email" for e in log)  # never started
    assert sims.stats("email")["by_effect"].get(effect_id("acme", run_id, "send_email"), 0) == 0
    assert sims.stats("crm")["by_effect"].get(effect_id("acme", run_id, "log_to_crm")) == 1
    [ended] = [e for e in log if e.event == "canceled"]
    assert "customer unsubscribed" in ended.run.reason and "key:acme-dev" in ended.run.reason


def test_a_paused_run_starts_nothing_until_resumed(stack, sims, events, acme):
    # The CRM call is in flight when the pause comes and its answer is lost: its retry is scheduled while
    # paused, and neither it nor anything after it starts until the resume.
    sims.fault("crm", kind="accept_then_timeout", ms=3000, times=1)
    run_id = cli_runs.submit(acme, "outbound_email", LEAD)
    wait_for(
        lambda: any(e.event == "tool_called" and e.step == "log_to_crm" for e in events.of(run_id)),
        30,
        "the CRM call to be in flight",
    )
    cli_runs.api(acme, "POST", f"/v1/runs/{run_id}/pause", json={"reason": "checking the copy"})
    wait_for(lambda: "retry_scheduled" in events.kinds(run_id), 30, "the lost call's retry, while paused")
    kinds = events.kinds(run_id)
    assert "paused" in kinds and kinds.index("paused") < kinds.index("retry_scheduled"), kinds
    [retry] = [e for e in events.of(run_id) if e.event == "retry_scheduled"]
    due_s = retry.retry.fire_at.timestamp() + 2
    wait_for(lambda: time.time() > due_s, 30, "the retry's time (and 2 s more) to pass")
    assert [e.attempt for e in events.of(run_id) if e.event == "tool_called"] == [1]  # nothing started
    cli_runs.api(acme, "POST", f"/v1/runs/{run_id}/resume", json={"reason": "copy is fine"})
    wait_for(lambda: "completed" in events.kinds(run_id), 60, "the resumed run to complete")
    log = events.of(run_id)
    kinds = [e.event for e in log]
    resumed = kinds.index("resumed")
    assert all(i > resumed for i, e in enumerate(log) if e.step == "send_email" or e.attempt == 2)
    assert sims.stats("crm")["by_effect"].get(effect_id("acme", run_id, "log_to_crm")) == 1
    assert sims.stats("email")["by_effect"].get(effect_id("acme", run_id, "send_email")) == 1
