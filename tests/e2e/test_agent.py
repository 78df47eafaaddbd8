"""The support_triage agent end to end: turns and calls as commit points, kill -9 anywhere, a looping or
misbehaving model, and a provider whose answer drifts. Every count is the providers' own."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from harness import kill_and_restart
from helpers import wait_for
from test_runs import submit

from keel.contracts import RunEvent

pytestmark = pytest.mark.e2e
TICKET = {
    "ticket_id": "T-1042",
    "customer_email": "ada@example.com",
    "amount_cents": 1500,
    "text": "I was charged twice for my May invoice. Please refund the duplicate.",
}
WORKFLOW = "support_triage"


def of_run(by_effect: dict[str, int], run_id: str) -> dict[str, int]:
    """A simulator's per-effect counts (tenant|run|step[|call]) for one run."""
    return {k: n for k, n in by_effect.items() if k.split("|")[1:2] == [run_id]}


def turns_asked(sims, run_id: str) -> dict[str, int]:
    """How many times the model simulator was asked each turn of the run (its own count)."""
    return {k.split("|")[3]: n for k, n in of_run(sims.stats("model")["by_effect"], run_id).items()}


def refunds(sims, run_id: str) -> int:
    return sum(of_run(sims.stats("helpdesk")["by_effect"], run_id).values())


def emails(sims, run_id: str) -> int:
    return sum(of_run(sims.stats("email")["by_effect"], run_id).values())


def calls_of(log: list[RunEvent], tool: str, kind: str = "tool_called") -> list[RunEvent]:
    return [e for e in log if e.event == kind and e.tool is not None and e.tool.tool == tool]


def test_support_triage_completes_and_its_events_tell_every_turn(stack, sims, events):
    run_id = submit(stack, WORKFLOW, {"ticket": TICKET})
    assert events.wait_terminal(run_id, 90) == "completed"
    log = events.of(run_id)
    turns = [e for e in log if e.event == "model_called"]
    assert [e.call for e in turns] == ["turn-1", "turn-2", "turn-3", "turn-4"]
    for e in turns:
        assert e.agent_id == "support_triage_v1" and e.model == "sim-medium" and (e.cost_usd_est or 0) > 0
        assert e.model_call is not None and e.model_call.prompt_tokens > 0 and e.input_ref
    chosen = [
        json.loads(e.output_json or "{}").get("tool_calls", [{}])[0].get("function", {}).get("name")
        for e in turns[:3]
    ]
    assert chosen == ["lookup_customer", "refund_charge", "email"]
    lookup, refund, email = (calls_of(log, t)[0] for t in ("lookup_customer@1", "refund_charge@1", "email@1"))
    assert (lookup.call, refund.call, email.call) == ("turn-1.call-0", "turn-2.call-0", "turn-3.call-0")
    assert "|turn-1.call-0|" in (lookup.idempotency_key or "")  # a read: its own call
    assert "turn-" not in (refund.idempotency_key or "").split("|")[-2]  # a write: no turn in its key
    answer = next(e for e in log if e.event == "step_committed" and e.step == "triage" and e.call is None)
    output = json.loads(answer.output_json or "{}")
    committed = {e.call: e for e in log if e.event == "step_committed" and e.call}
    assert output["refund_id"] == committed["turn-2.call-0"].commit.external_id
    assert output["message_id"] == committed["turn-3.call-0"].commit.external_id
    assert any(e.event == "step_committed" and e.step == "log_resolution" for e in log)
    # Ground truth: one refund, one email, every turn asked once.
    assert refunds(sims, run_id) == 1 and emails(sims, run_id) == 1
    assert turns_asked(sims, run_id) == {f"turn-{n}": 1 for n in range(1, 5)}


def test_executor_killed_between_turns_no_committed_turn_is_asked_again(stack, sims, events):
    # The lookup hangs in the adapters: turn 1 is committed and the executor has nothing in flight.
    sims.fault("helpdesk", kind="latency", ms=3000, path="/v1/customers", method="GET")
    run_id = submit(stack, WORKFLOW, {"ticket": TICKET})
    wait_for(
        lambda: any(e.event == "tool_called" and e.call == "turn-1.call-0" for e in events.of(run_id)),
        30,
        "the lookup of turn 1 to be called",
    )
    kill_and_restart(stack, "executor")
    assert events.wait_terminal(run_id, 90) == "completed"
    assert turns_asked(sims, run_id) == {f"turn-{n}": 1 for n in range(1, 5)}
    assert refunds(sims, run_id) == 1 and emails(sims, run_id) == 1


def test_adapters_killed_during_the_refund_call_refund_exactly_once(stack, sims, events):
    # The helpdesk refunds, then holds its answer: the adapters die with the call in flight.
    sims.fault("helpdesk", kind="accept_then_timeout", ms=4000, path="/v1/refunds", method="POST")
    run_id = submit(stack, WORKFLOW, {"ticket": TICKET})
    wait_for(lambda: calls_of(events.of(run_id), "refund_charge@1"), 30, "the refund to be called")
    wait_for(lambda: refunds(sims, run_id) == 1, 10, "the helpdesk to refund")
    kill_and_restart(stack, "adapters")
    assert events.wait_terminal(run_id, 120) == "completed"
    log = events.of(run_id)
    retry = next(e for e in log if e.event == "retry_scheduled" and e.call == "turn-2.call-0")
    assert retry.retry is not None and retry.retry.failure_class == "unknown_outcome"
    assert len({e.idempotency_key for e in calls_of(log, "refund_charge@1")}) == 1
    assert refunds(sims, run_id) == 1  # lookup mode found the refund: the helpdesk never refunded twice
    assert emails(sims, run_id) == 1
    assert all(n == 1 for n in turns_asked(sims, run_id).values())


def test_a_looping_model_is_hard_stopped_at_max_turns(stack, sims, events):
    # Loop detection off (tests/workflows/support_triage_unguarded): max_turns is the last stop.
    sims.fault("model", kind="loop", times=100)
    run_id = submit(stack, "support_triage_unguarded", {"ticket": TICKET})
    assert events.wait_terminal(run_id, 90) == "failed"
    log = events.of(run_id)
    failed = next(e for e in log if e.event == "failed")
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert "max_turns 8" in (failed.error or "")
    evidence = json.loads(failed.output_json or "{}")
    assert evidence["turns"] == 8 and evidence["last_calls"]
    asked = turns_asked(sims, run_id)
    assert sorted(asked) == sorted(f"turn-{n}" for n in range(1, 9)) and set(asked.values()) == {1}
    assert refunds(sims, run_id) == 0 and emails(sims, run_id) == 0


def test_unknown_tools_and_bad_arguments_never_reach_a_provider(stack, sims, events):
    sims.fault("model", kind="unknown_tool", times=1)
    sims.fault("model", kind="bad_args", times=1)
    run_id = submit(stack, WORKFLOW, {"ticket": TICKET})
    assert events.wait_terminal(run_id, 90) == "completed"
    log = events.of(run_id)
    refused = [e for e in log if e.event == "tool_call_refused"]
    assert len(refused) == 2
    assert "not one of this agent's tools" in (refused[0].error or "")
    assert "input schema" in (refused[1].error or "") and "$" in (refused[1].error or "")
    # Only the accepted calls reached the helpdesk: one lookup, one refund.
    helpdesk = sims.stats("helpdesk")
    # (the lookup-mode check before the write is a request too: GET customer, GET refund by key, POST)
    assert helpdesk["requests"] == 3 and refunds(sims, run_id) == 1
    called = Counter(e.tool.tool for e in log if e.event == "tool_called" and e.tool)
    assert called == {"lookup_customer@1": 1, "refund_charge@1": 1, "email@1": 1, "crm@1": 1}


def test_a_null_field_drift_on_the_refund_quarantines_the_step_and_nothing_runs_on_it(stack, sims, events):
    sims.fault("helpdesk", kind="null_field", field="refund_id", path="/v1/refunds", method="POST")
    run_id = submit(stack, WORKFLOW, {"ticket": TICKET})
    assert events.wait_terminal(run_id, 90) == "quarantined"
    log = events.of(run_id)
    held = next(e for e in log if e.event == "quarantined")
    assert held.call == "turn-2.call-0" and held.quarantine is not None
    assert held.quarantine.failure_class == "validation" and "$.refund_id" in (held.error or "")
    assert [e.call for e in log if e.event == "model_called"] == ["turn-1", "turn-2"]  # never shown to it
    assert not any(e.step == "log_resolution" for e in log)
    assert refunds(sims, run_id) == 1 and emails(sims, run_id) == 0
