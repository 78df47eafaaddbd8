"""Approvals and fallbacks through the running services (docs/quarantine.md): an approval nobody answers
fires its deadline on time even across a scheduler kill -9, its rule applies (deny: the run fails; a
fallback: the fallback runs and the run completes), and nothing is sent; a refund whose answer drifts
degrades to its fallback step, the run completes, and the refund that happened stays visible."""

from __future__ import annotations

import json

import pytest
from harness import kill_and_restart
from helpers import wait_for
from test_runs import submit

from infra.simulators.dedup import effect_id

pytestmark = pytest.mark.e2e
REFUND = {"charge_id": "ch_1a2b3c", "amount_cents": 1250}


def ms(event) -> int:
    return int(event.ts.timestamp() * 1000)


def test_an_unanswered_approval_fires_its_deadline_across_a_scheduler_kill_and_sends_nothing(
    stack, sims, events
):
    run_id = submit(stack, "approve_refund", REFUND)
    wait_for(lambda: "approval_requested" in events.kinds(run_id), 30, "the approval to be requested")
    [asked] = [e for e in events.of(run_id) if e.event == "approval_requested"]
    shown = json.loads(asked.output_json)
    assert shown["on_timeout"] == "deny" and shown["deadline"] == ms(asked) + 4000
    assert json.loads(asked.input_json) == {**REFUND, "reason": "requested_by_customer"}  # what is sent
    kill_and_restart(stack, "scheduler")  # the deadline lives in the run's state, not in the process

    assert events.wait_terminal(run_id, 60) == "failed"
    log = events.of(run_id)
    [resolved] = [e for e in log if e.event == "quarantine_resolved"]
    assert (resolved.quarantine.decision, resolved.quarantine.decided_by) == ("expire", "scheduler")
    assert resolved.quarantine.case_id == asked.quarantine.case_id == f"{run_id}:refund:approval-1"
    # on time: not before the deadline, and within the restart's catch-up after it
    assert shown["deadline"] <= ms(resolved) < shown["deadline"] + 30_000
    [failed] = [e for e in log if e.event == "failed"]
    assert "expired" in failed.run.reason
    assert not [e for e in log if e.event == "tool_called"]
    assert sims.stats("payments")["deliveries"] == 0  # ground truth: no refund was ever asked for


def test_an_unanswered_approval_with_a_fallback_rule_runs_the_fallback_on_time_across_a_scheduler_kill(
    stack, sims, events
):
    run_id = submit(stack, "approve_or_escalate", {**REFUND, "notify_to": "ops@example.com"})
    wait_for(lambda: "approval_requested" in events.kinds(run_id), 30, "the approval to be requested")
    [asked] = [e for e in events.of(run_id) if e.event == "approval_requested"]
    deadline = json.loads(asked.output_json)["deadline"]
    kill_and_restart(stack, "scheduler")

    assert events.wait_terminal(run_id, 60) == "completed"
    log = events.of(run_id)
    [resolved] = [e for e in log if e.event == "quarantine_resolved"]
    [chosen] = [e for e in log if e.event == "fallback_chosen"]
    assert (resolved.quarantine.decision, resolved.quarantine.decided_by) == ("expire", "scheduler")
    assert deadline <= ms(resolved) < deadline + 30_000  # on time, and the fallback chosen with it
    assert ms(chosen) == ms(resolved)
    record = json.loads(chosen.output_json)
    assert (record["from"], record["to"]) == ("refund", "escalate") and "expired" in record["because"]
    [escalated] = [e for e in log if e.event == "step_committed" and e.step == "escalate"]
    assert ms(escalated) >= deadline and not [e for e in log if e.event == "failed"]
    # ground truth: the refund was never asked for, the operations desk got one email
    assert sims.stats("payments")["by_effect"].get(effect_id("acme", run_id, "refund"), 0) == 0
    assert sims.stats("email")["by_effect"].get(effect_id("acme", run_id, "escalate")) == 1


def test_a_drifted_refund_degrades_to_its_fallback_and_the_run_completes(stack, sims, events):
    sims.fault("payments", kind="null_field", field="refund_id")
    run_id = submit(stack, "refund_with_fallback", {**REFUND, "notify_to": "ops@example.com"})
    assert events.wait_terminal(run_id, 60) == "completed"
    log = events.of(run_id)
    assert not [e for e in log if e.event == "quarantined"]
    [chosen] = [e for e in log if e.event == "fallback_chosen"]
    record = json.loads(chosen.output_json)
    assert (record["from"], record["to"], record["failure_class"]) == ("refund", "notify", "validation")
    # the refund happened (the provider accepted it): no case opened, so the choice keeps the evidence
    assert record["effect_may_exist"] is True and chosen.output_ref and record["evidence"]["output_json"]
    assert chosen.idempotency_key == next(e for e in log if e.event == "tool_called").idempotency_key
    [notified] = [e for e in log if e.event == "step_committed" and e.step == "notify"]
    [completed] = [e for e in log if e.event == "completed"]
    assert json.loads(completed.output_json)["refund"] == json.loads(notified.output_json)
    assert sims.stats("payments")["by_effect"] == {effect_id("acme", run_id, "refund"): 1}
    assert sims.stats("email")["deliveries"] == 1
