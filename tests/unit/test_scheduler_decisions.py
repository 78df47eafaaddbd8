"""Decisions on quarantine cases in the scheduler's pure core (docs/quarantine.md): retry, edit, skip, fail;
one decision per case; refusals that say why and change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import test_scheduler_agent as agent_kit
from test_scheduler_core import CATALOG, T0, _at_send, commands, commit, fact, kinds, send_failed, started

from keel import events as ev
from keel.contracts import ControlCommand, RunEvent, ToolDetail
from keel.idempotency import agent_call_key
from keel.tooldefs import ToolDefinition, load_definition
from services.scheduler import retention
from services.scheduler.core import Decision, decide
from services.scheduler.state import RunState
from services.scheduler.verdicts import quarantine

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {f"{d.name}@{d.version}": d for d in map(load_definition, sorted((ROOT / "tools").glob("*.yaml")))}
SENT = {"message_id": "msg_1", "status": "sent", "to": "lead@example.com"}


def tools(ref: str) -> ToolDefinition:
    if ref not in TOOLS:
        raise LookupError(f"unknown tool {ref}")
    return TOOLS[ref]


def control(
    state: RunState,
    action: str,
    args: Any = None,
    *,
    cid: str = "c-1",
    by: str = "operator:ab12",
    reason: str = "checked with the provider",
    now: int = T0 + 1000,
) -> Decision:
    command = ControlCommand(
        command_id=cid,
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        action=action,
        reason=reason,
        issued_by=by,
        issued_at=datetime.now(UTC),
        args_json=None if args is None else (args if isinstance(args, str) else json.dumps(args)),
    )
    return decide(state, command, 0, now, CATALOG, tools=tools)


def decide_case(state: RunState, case_id: str, decision: str, **more: Any) -> Decision:
    cid, by = more.pop("cid", "c-1"), more.pop("by", "operator:ab12")
    return control(state, "decide", {"case_id": case_id, "decision": decision, **more}, cid=cid, by=by)


def events(d: Decision, kind: str) -> list[RunEvent]:
    return [o for o in d.outputs if isinstance(o, RunEvent) and o.event == kind]


def held_send() -> tuple[RunState, str, str]:
    """A run held on send_email: attempt 1's outcome is unknown on a tool without a safe mode."""
    state = started()
    first = _at_send(state)
    d = decide(state, send_failed(state, "unknown_outcome", "none"), 0, T0, CATALOG, tools=tools)
    [held] = events(d, ev.QUARANTINED)
    assert state.status == "quarantined"
    return state, held.quarantine.case_id, first.idempotency_key or ""


def test_a_case_is_registered_with_whether_its_effect_may_exist():
    state, case_id, key = held_send()
    assert case_id == "run-1:send_email:1"
    case = state.cases[case_id]
    assert case["failure_class"] == "unknown_outcome" and case["effect_possible"] is True
    assert case["key"] == key and "decision" not in case


def test_retry_sends_the_same_input_under_the_same_key_and_the_run_goes_on():
    state, case_id, key = held_send()
    d = decide_case(state, case_id, "retry")
    assert kinds(d) == ["quarantine_resolved"] and state.status == "running"
    [resolved] = events(d, ev.QUARANTINE_RESOLVED)
    q = resolved.quarantine
    assert (q.case_id, q.decision, q.decided_by, q.reason) == (
        case_id,
        "retry",
        "operator:ab12",
        "checked with the provider",
    )
    record = json.loads(resolved.output_json or "")
    assert record == {
        "case_id": case_id,
        "decision": "retry",
        "reason": "checked with the provider",
        "decided_by": "operator:ab12",
        "command_id": "c-1",
        "previous_key": key,
        "key": key,
    }
    [again] = commands(d)
    assert (again.step, again.attempt, again.idempotency_key) == ("send_email", 2, key)
    assert state.cases[case_id]["decision"] == "retry" and state.cases[case_id]["command_id"] == "c-1"
    assert kinds(commit(state, "send_email", 2, SENT)) == ["completed"]


def test_a_second_decision_on_a_case_is_refused_and_changes_nothing():
    state, case_id, _ = held_send()
    decide_case(state, case_id, "retry", cid="c-1", by="operator:first")
    before = state.to_json()
    d = decide_case(state, case_id, "fail", cid="c-2", by="operator:second")
    [refused] = events(d, ev.DECISION_REFUSED)
    assert kinds(d) == ["decision_refused"] and commands(d) == []
    assert "already decided: retry by operator:first" in (refused.error or "")
    assert json.loads(refused.output_json or "") == {
        "case_id": case_id,
        "decision": "fail",
        "command_id": "c-2",
    }
    assert refused.event_id == "run-1:0:decision_refused:c-2" and refused.step == "send_email"
    assert state.to_json() == before and state.status == "running"


def test_a_decided_case_stays_decided_while_the_run_is_held_on_a_later_case():
    # The only thing that refuses this second decision is the case's own record: its step committed at
    # the case's attempt (a skip), and the run is held again, on a later step's case.
    state = started()
    commit(state, "draft_email", 1, {"subject": "Hi", "body": "Hello"})
    lost = ToolDetail(tool="crm@1", idempotency_mode="none", failure_class="unknown_outcome")
    decide(state, fact(state, ev.TOOL_FAILED, "log_to_crm", 1, source="adapters", tool=lost), 0, T0, CATALOG)
    logged = {
        "activity_id": "a",
        "contact_email": "lead@example.com",
        "kind": "email_drafted",
        "created_at": "t",
    }
    d = decide_case(state, "run-1:log_to_crm:1", "skip", output=logged, cid="c-skip")
    assert kinds(d) == ["quarantine_resolved", "step_committed"] and commands(d)[0].step == "send_email"
    decide(state, send_failed(state, "unknown_outcome", "none"), 0, T0, CATALOG, tools=tools)
    assert state.status == "quarantined"
    before = state.to_json()
    d = decide_case(state, "run-1:log_to_crm:1", "fail", cid="c-late")
    assert kinds(d) == ["decision_refused"] and state.to_json() == before
    [refused] = events(d, ev.DECISION_REFUSED)
    assert "already decided: skip by operator:ab12 (command c-skip)" in (refused.error or "")


def test_edit_when_the_effect_may_exist_is_refused_unless_a_new_effect_is_acknowledged():
    state, case_id, key = held_send()
    new = {"to": "lead@example.com", "subject": "Hi again", "body": "Hello"}
    d = decide_case(state, case_id, "edit", input=new)
    [refused] = events(d, ev.DECISION_REFUSED)
    assert "may already have made this effect" in (refused.error or "") and "new_effect" in (
        refused.error or ""
    )
    assert state.status == "quarantined" and "decision" not in state.cases[case_id]
    d = decide_case(state, case_id, "edit", input=new, new_effect=True, cid="c-2")
    [resolved] = events(d, ev.QUARANTINE_RESOLVED)
    [again] = commands(d)
    assert again.attempt == 2 and again.idempotency_key != key
    assert json.loads(again.input_json) == {"tool": "email@1", "payload": new}
    record = json.loads(resolved.output_json or "")
    assert (record["previous_key"], record["key"], record["input"]) == (key, again.idempotency_key, new)
    assert resolved.idempotency_key == again.idempotency_key and resolved.input_json == again.input_json


def _held_without_effect() -> tuple[RunState, str]:
    """A send the provider refused without making it (a request-side contract break), held for a human."""
    state = started()
    _at_send(state)
    refused = send_failed(state, "validation", "provider_key", error="$.to: null", effect_accepted=False)
    d = quarantine(
        state, "send_email", T0, "the provider refused the request", "validation", evidence=refused
    )
    [held] = [o for o in d.outputs if isinstance(o, RunEvent)]
    return state, held.quarantine.case_id


def test_edit_breaking_the_tools_input_schema_is_refused_with_json_paths():
    state, case_id = _held_without_effect()
    d = decide_case(state, case_id, "edit", input={"to": "not an address", "subject": ""})
    [refused] = events(d, ev.DECISION_REFUSED)
    error = refused.error or ""
    assert "email@1's input schema" in error and "$.to" in error and "$.subject" in error
    assert "'body' is a required property" in error
    assert commands(d) == [] and state.status == "quarantined"


def test_edit_without_a_possible_effect_applies_under_a_new_key():
    state, case_id = _held_without_effect()
    assert state.cases[case_id]["effect_possible"] is False
    new = {"to": "lead@example.com", "subject": "Hi", "body": "Hello"}
    d = decide_case(state, case_id, "edit", input=new)
    assert kinds(d) == ["quarantine_resolved"]
    [again] = commands(d)
    assert (
        json.loads(again.input_json)["payload"] == new
        and state.steps["send_email"].input_json == again.input_json
    )


def test_skip_commits_the_validated_output_and_the_run_completes_with_it():
    state, case_id, _ = held_send()
    d = decide_case(state, case_id, "skip", output={"message_id": "msg_9"})
    [refused] = events(d, ev.DECISION_REFUSED)
    assert "email@1's output schema" in (refused.error or "") and "'status' is a required property" in (
        refused.error or ""
    )
    d = decide_case(state, case_id, "skip", output=SENT, cid="c-2")
    assert kinds(d) == ["quarantine_resolved", "step_committed", "completed"]
    [committed] = events(d, ev.STEP_COMMITTED)
    assert committed.source == "scheduler" and json.loads(committed.output_json or "") == SENT
    assert committed.event_id != f"{state.run_id}:send_email:1:step_committed"  # not the ledger's id
    assert state.steps["send_email"].output == SENT and state.status == "completed"
    [completed] = events(d, ev.COMPLETED)
    assert json.loads(completed.output_json or "")["send_email"] == SENT


def test_fail_ends_the_run_failed_naming_who_and_why():
    state, case_id, _ = held_send()
    d = decide_case(state, case_id, "fail", by="operator:cd34")
    assert kinds(d) == ["quarantine_resolved", "failed"] and state.status == "failed"
    [failed] = events(d, ev.FAILED)
    assert "operator:cd34" in (failed.run.reason or "") and "checked with the provider" in (
        failed.run.reason or ""
    )


def test_decisions_on_an_ended_run_are_refused_with_a_fact():
    state, case_id, _ = held_send()
    control(state, "cancel", cid="c-cancel")
    assert state.status == "canceled"
    d = decide_case(state, case_id, "retry", cid="c-late")
    [refused] = events(d, ev.DECISION_REFUSED)
    # The cancel closed the case (decision `cancel`): a later decision finds it decided.
    assert "already decided: cancel by" in (refused.error or "") and commands(d) == []
    assert control(state, "pause", cid="c-p").outputs == []  # other commands on an ended run: nothing
    kept = retention.marker(state, T0 + 2000)  # what the scheduler keeps of an ended run: no cases
    [refused] = events(decide_case(kept, case_id, "retry", cid="c-later"), ev.DECISION_REFUSED)
    assert "has ended (canceled)" in (refused.error or "") and refused.output_json is not None
    assert json.loads(refused.output_json)["case_id"] == case_id


def test_malformed_unknown_and_wrong_word_decisions_are_refused():
    state, case_id, _ = held_send()
    for args, why in [
        ("{not json", "not valid JSON"),
        (None, "needs args_json"),
        ({"decision": "retry"}, "case_id must be a non-empty string"),
        ({"case_id": "run-1:nope:1", "decision": "retry"}, "has no case run-1:nope:1"),
        ({"case_id": case_id, "decision": "approve"}, "'approve' is not a decision on a quarantine case"),
        ({"case_id": case_id, "decision": "edit"}, "edit needs args_json.input"),
        ({"case_id": case_id, "decision": "skip"}, "skip needs args_json.output"),
    ]:
        d = control(state, "decide", args)
        [refused] = events(d, ev.DECISION_REFUSED)
        assert why in (refused.error or ""), (args, refused.error)
    assert state.status == "quarantined" and "decision" not in state.cases[case_id]


def test_a_decision_on_a_run_not_held_on_its_case_is_refused():
    state, case_id, _ = held_send()
    decide_case(state, case_id, "retry")
    state.cases[case_id].pop("decision")  # as if the record were lost: the run itself is not held
    d = decide_case(state, case_id, "retry", cid="c-2")
    [refused] = events(d, ev.DECISION_REFUSED)
    assert "is running, not held on case" in (refused.error or "")


def test_the_held_llm_step_skips_with_an_output_checked_against_its_output_schema():
    state = started()
    state.cases["run-1:draft_email:1"] = {
        "kind": "quarantine",
        "step": "draft_email",
        "call": None,
        "attempt": 1,
        "key": None,
        "failure_class": "validation",
        "effect_possible": False,
        "opened_at": T0,
    }
    state.status = "quarantined"
    d = decide_case(state, "run-1:draft_email:1", "edit", input={})
    assert "edit applies to tool steps only" in (events(d, ev.DECISION_REFUSED)[0].error or "")
    d = decide_case(
        state, "run-1:draft_email:1", "skip", output={"subject": "Hi", "body": "Hello"}, cid="c-2"
    )
    assert kinds(d) == ["quarantine_resolved", "step_committed"]
    [crm] = commands(d)
    assert crm.step == "log_to_crm" and state.status == "running"


def test_cases_and_pause_survive_the_state_round_trip():
    state, case_id, _ = held_send()
    decide_case(state, case_id, "retry")
    state.paused_by, state.pause_reason = "tenant:acme", "maintenance"
    again = RunState.from_json(state.to_json())
    assert again.cases == state.cases and again.cases[case_id]["decided_by"] == "operator:ab12"
    assert (again.paused_by, again.pause_reason) == ("tenant:acme", "maintenance")


def test_a_late_commit_of_the_held_attempt_lets_retry_go_on_without_a_new_attempt():
    state, case_id, _ = held_send()
    commit(state, "send_email", 1, SENT)  # the lost call did happen: recorded while held
    assert state.status == "quarantined"
    d = decide_case(state, case_id, "retry")
    assert kinds(d) == ["quarantine_resolved", "completed"] and commands(d) == []


def test_a_send_accepted_by_the_provider_is_registered_as_a_possible_effect():
    state = started()
    _at_send(state)
    accepted = fact(
        state,
        ev.TOOL_FAILED,
        "send_email",
        1,
        source="adapters",
        tool=ToolDetail(
            tool="email@1", idempotency_mode="provider_key", failure_class="validation", effect_accepted=True
        ),
    )
    d = decide(state, accepted, 0, T0, CATALOG, tools=tools)
    [held] = events(d, ev.QUARANTINED)
    assert state.cases[held.quarantine.case_id]["effect_possible"] is True


# --- agent steps: a held tool call, and an agent whose model broke its contract ----------------------

REFUND_ARGS = {"charge_id": "ch_1", "amount_cents": 5}


def _agent_control(run: agent_kit.Run, args: dict[str, Any], cid: str = "c-1") -> list[Any]:
    assert run.state is not None
    command = ControlCommand(
        command_id=cid, run_id=run.state.run_id, tenant_id="acme", action="decide", reason="checked",
        issued_by="operator:ab12", issued_at=datetime.now(UTC), args_json=json.dumps(args),
    )  # fmt: skip
    return run.send(command)  # type: ignore[arg-type]


def _held_refund_call() -> tuple[agent_kit.Run, str, Any]:
    run = agent_kit.Run(agent_kit.workflow())
    (t1,) = agent_kit.commands(run.out)
    (refund,) = agent_kit.commands(run.send(agent_kit.turn(t1, agent_kit.call("issue_refund", REFUND_ARGS))))
    (held,) = agent_kit.events(run.send(agent_kit.tool_failed(refund, "unknown_outcome", mode="none")))
    assert held.quarantine is not None
    return run, held.quarantine.case_id, refund


def test_retry_of_an_agents_held_tool_call_repeats_it_under_its_key():
    run, case_id, refund = _held_refund_call()
    out = _agent_control(run, {"case_id": case_id, "decision": "retry"})
    (resolved,) = agent_kit.events(out, ev.QUARANTINE_RESOLVED)
    assert resolved.call == "turn-1.call-0" and resolved.quarantine.decision == "retry"
    (again,) = agent_kit.commands(out)
    assert (again.call, again.attempt, again.idempotency_key) == ("turn-1.call-0", 2, refund.idempotency_key)


def test_skip_of_an_agents_held_tool_call_gives_the_supplied_result_to_the_model():
    run, case_id, _ = _held_refund_call()
    out = _agent_control(run, {"case_id": case_id, "decision": "skip", "output": {"refund": 1}})
    (refused,) = agent_kit.events(out, ev.DECISION_REFUSED)
    assert "issue_refund@1's output schema" in (refused.error or "")
    out = _agent_control(
        run, {"case_id": case_id, "decision": "skip", "output": {"refund_id": "re_9"}}, "c-2"
    )
    (committed,) = agent_kit.events(out, ev.STEP_COMMITTED)
    assert committed.call == "turn-1.call-0" and committed.source == "scheduler"
    (t2,) = agent_kit.commands(out)
    assert t2.call == "turn-2"
    assert agent_kit.payload(t2)["messages"][-1]["content"] == json.dumps(
        {"refund_id": "re_9"}, separators=(",", ":")
    )


def test_edit_of_an_agents_tool_call_sends_it_under_the_new_arguments_key_and_the_model_reads_it():
    run, case_id, refund = _held_refund_call()
    bad = {"case_id": case_id, "decision": "edit", "input": {"charge_id": "ch_1", "amount_cents": 0}}
    (refused,) = agent_kit.events(_agent_control(run, {**bad, "new_effect": True}), ev.DECISION_REFUSED)
    assert "issue_refund@1's input schema" in (refused.error or "") and "$.amount_cents" in (
        refused.error or ""
    )
    fixed = {"charge_id": "ch_1", "amount_cents": 4}
    edit = {"case_id": case_id, "decision": "edit", "input": fixed}
    (refused,) = agent_kit.events(_agent_control(run, edit, "c-2"), ev.DECISION_REFUSED)
    assert "new_effect" in (refused.error or "")  # its outcome is unknown: the refund may exist
    out = _agent_control(run, {**edit, "new_effect": True}, "c-3")
    (again,) = agent_kit.commands(out)
    key = agent_call_key(
        "acme",
        "support",
        agent_kit.RUN,
        "triage",
        "issue_refund@1",
        fixed,
        side_effects=True,
        turn=1,
        index=0,
    )
    assert (again.call, again.attempt, again.idempotency_key) == ("turn-1.call-0", 2, key)
    assert agent_kit.payload(again) == {"tool": "issue_refund@1", "payload": fixed}
    (resolved,) = agent_kit.events(out, ev.QUARANTINE_RESOLVED)
    record = json.loads(resolved.output_json or "")
    assert (record["previous_key"], record["key"]) == (refund.idempotency_key, key)
    (t2,) = agent_kit.commands(run.send(agent_kit.committed(again, {"refund_id": "re_1"})))
    asked = [m for m in agent_kit.payload(t2)["messages"] if m.get("tool_calls")][0]
    assert json.loads(asked["tool_calls"][0]["function"]["arguments"]) == fixed  # what was called


def test_edit_of_a_tool_call_whose_result_answers_a_repeat_in_its_turn_is_refused():
    run = agent_kit.Run(agent_kit.workflow())
    (t1,) = agent_kit.commands(run.out)
    twice = [
        agent_kit.call("issue_refund", REFUND_ARGS, "a"),
        agent_kit.call("issue_refund", REFUND_ARGS, "b"),
    ]
    (refund,) = agent_kit.commands(run.send(agent_kit.turn(t1, *twice)))
    (held,) = agent_kit.events(run.send(agent_kit.tool_failed(refund, "unknown_outcome", mode="none")))
    edit = {"case_id": held.quarantine.case_id, "decision": "edit", "input": REFUND_ARGS, "new_effect": True}
    (refused,) = agent_kit.events(_agent_control(run, edit), ev.DECISION_REFUSED)
    assert "also answers the same write" in (refused.error or "")


def test_an_agent_that_broke_its_contract_is_skipped_with_an_output_or_failed_never_retried():
    run = agent_kit.Run(agent_kit.workflow(max_violations=0))
    (t1,) = agent_kit.commands(run.out)
    (held,) = agent_kit.events(run.send(agent_kit.turn(t1, agent_kit.call("nope", {}))), ev.QUARANTINED)
    case_id = held.quarantine.case_id
    (refused,) = agent_kit.events(_agent_control(run, {"case_id": case_id, "decision": "retry"}))
    assert "decide skip" in (refused.error or "")
    out = _agent_control(run, {"case_id": case_id, "decision": "skip", "output": {"text": "done"}}, "c-2")
    assert [e.event for e in agent_kit.events(out)] == ["quarantine_resolved", "step_committed"]
    (after,) = agent_kit.commands(out)
    assert (
        after.step == "after"
        and run.state is not None
        and run.state.steps["triage"].output == {"text": "done"}
    )


def test_a_case_opened_while_canceling_takes_no_new_attempt_and_a_skip_ends_the_run_canceled():
    state = started()
    _at_send(state)
    control(state, "cancel", cid="c-cancel", by="tenant:acme")
    assert state.status == "canceling"
    # Under no safe mode the unknown outcome cannot be settled by repeating it: it is held.
    d = decide(state, send_failed(state, "unknown_outcome", "none"), 0, T0, CATALOG, tools=tools)
    [held] = events(d, ev.QUARANTINED)
    case_id = held.quarantine.case_id
    d = decide_case(state, case_id, "retry")
    assert "being canceled by tenant:acme" in (events(d, ev.DECISION_REFUSED)[0].error or "")
    d = decide_case(state, case_id, "skip", output=SENT, cid="c-2")
    assert kinds(d) == ["quarantine_resolved", "step_committed", "canceled"] and commands(d) == []
    assert state.steps["send_email"].output == SENT  # the effect that happened is kept


def test_a_cancel_closes_the_runs_open_case_naming_who_canceled():
    state, case_id, _ = held_send()
    d = control(state, "cancel", cid="c-cancel", by="tenant:acme")
    assert kinds(d) == ["quarantine_resolved", "canceled"]
    [closed] = events(d, ev.QUARANTINE_RESOLVED)
    assert closed.quarantine.case_id == case_id and closed.quarantine.decision == "cancel"
    assert closed.quarantine.decided_by == "tenant:acme" and state.cases[case_id]["decision"] == "cancel"
