"""Approvals in the scheduler's pure core: a case bound to the rendered payload and key, its durable
deadline, and what approve, deny, fail and an expired deadline lead to (docs/quarantine.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from keel import events as ev
from keel.contracts import CommitDetail, ControlCommand, RunEvent, RunRequested, StepCommand
from keel.idempotency import content_ref
from keel.workflows import Catalog, WorkflowSpec, parse_workflow
from services.scheduler import approvals
from services.scheduler.core import Decision, decide, due, next_timer
from services.scheduler.dispatch import dispatch_ready
from services.scheduler.env import Env
from services.scheduler.state import RunState

T0 = 1_773_059_696_000
MODES = {"refund@1": "provider_key", "email@1": "provider_key"}.get
INPUT = {"charge_id": "ch_1", "amount_cents": 500}


def workflow(refund: dict[str, Any] | None = None, ask: dict[str, Any] | None = None) -> WorkflowSpec:
    """ask (approval) -> refund (tool, requires_approval) -> receipt (llm); notify: the fallback, when
    `refund` or `ask` names it."""
    notify = {
        "name": "notify",
        "kind": "tool",
        "tool": "email@1",
        "fallback_only": True,
        "input": {"to": "ops@example.com", "subject": "refund {{ input.charge_id }} needs a hand"},
    }
    uses_notify = "notify" in json.dumps([refund, ask])
    return parse_workflow(
        {
            "name": "approve_flow",
            "version": 1,
            "input": {"charge_id": "string", "amount_cents": "integer"},
            "steps": [
                {
                    "name": "ask",
                    "kind": "approval",
                    "prompt": "Refund {{ input.amount_cents }} on {{ input.charge_id }}?",
                    "approval": {"timeout_ms": 1000},
                    **(ask or {}),
                },
                {
                    "name": "refund",
                    "kind": "tool",
                    "tool": "refund@1",
                    "needs": ["ask"],
                    "side_effects": True,
                    "requires_approval": True,
                    "input": {
                        "charge_id": "{{ input.charge_id }}",
                        "amount_cents": "{{ input.amount_cents }}",
                    },
                    **(refund or {}),
                },
                {
                    "name": "receipt",
                    "kind": "llm",
                    "model": "sim-small",
                    "needs": ["refund"],
                    "prompt": "Write a receipt for {{ steps.refund.output }}.",
                },
            ]
            + ([notify] if uses_notify else []),
        }
    )


FALLBACKS = {
    "on_failure": {"fallback": "notify"},
    "approval": {"timeout_ms": 4000, "on_timeout": {"fallback": "notify"}},
}


def catalog(spec: WorkflowSpec) -> Catalog:
    return Catalog({(spec.name, spec.version): spec})


def start(spec: WorkflowSpec, run_id: str = "run-a") -> tuple[RunState, Decision]:
    req = RunRequested(
        request_id="req",
        run_id=run_id,
        tenant_id="acme",
        workflow=spec.name,
        input_json=json.dumps(INPUT),
        requested_at=datetime.fromtimestamp(T0 / 1000, UTC),
    )
    d = decide(None, req, 0, T0, catalog(spec))
    assert d.state is not None
    return d.state, d


def events(d: Decision, kind: str | None = None) -> list[RunEvent]:
    return [o for o in d.outputs if isinstance(o, RunEvent) and (kind is None or o.event == kind)]


def commands(d: Decision) -> list[StepCommand]:
    return [o for o in d.outputs if isinstance(o, StepCommand)]


def command(
    state: RunState, decision: str, case: str | None = None, bound_to: Any = None, *, by: str = "tenant:acme"
) -> tuple[ControlCommand, dict[str, Any]]:
    args: dict[str, Any] = {"case_id": case, "decision": decision}
    if bound_to is not None:
        args["bound_to"] = bound_to
    cmd = ControlCommand(
        command_id=f"cmd-{decision}-{len(state.cases)}-{case}",
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        action="decide",
        reason="checked with the customer",
        issued_by=by,
        issued_at=datetime.now(UTC),
        args_json=json.dumps(args),
    )
    return cmd, args


def judge(
    state: RunState, spec: WorkflowSpec, decision: str, case: str, bound_to: Any = None, now: int = T0 + 10
) -> Decision:
    cmd, args = command(state, decision, case, bound_to)
    return approvals.decide(state, cmd, args, spec, now, Env())


def shown(requested: RunEvent) -> dict[str, Any]:
    """What an approver copies from the case: the payload's ref and key exactly as shown."""
    return {"input_ref": requested.input_ref, "idempotency_key": requested.idempotency_key}


def commit(state: RunState, spec: WorkflowSpec, step: str, output: Any, now: int = T0 + 20) -> Decision:
    fact = RunEvent(
        event_id=f"{state.run_id}:{step}:commit",
        run_id=state.run_id,
        tenant_id="acme",
        workflow=state.workflow,
        step=step,
        event=ev.STEP_COMMITTED,
        ts=datetime.now(UTC),
        attempt=state.steps[step].attempt,
        source="ledger",
        output_json=json.dumps(output),
        commit=CommitDetail(external_id=f"id-{step}", committed_at=datetime.now(UTC)),
    )
    return decide(state, fact, 0, now, catalog(spec))


def approved_ask(spec: WorkflowSpec) -> tuple[RunState, RunEvent]:
    """The run past its approval step, with the refund's own approval requested."""
    state, d = start(spec)
    [asked] = events(d, ev.APPROVAL_REQUESTED)
    released = judge(state, spec, "approve", asked.quarantine.case_id, shown(asked))
    [requested] = events(released, ev.APPROVAL_REQUESTED)
    return state, requested


# --- an approval step -----------------------------------------------------------------------------


def test_an_approval_step_asks_its_rendered_prompt_and_waits_with_a_deadline():
    spec = workflow()
    state, d = start(spec)
    [asked] = events(d, ev.APPROVAL_REQUESTED)
    assert commands(d) == []
    case = "run-a:ask:approval-1"
    assert asked.quarantine.case_id == case and asked.quarantine.reason == "Refund 500 on ch_1?"
    assert json.loads(asked.input_json) == {"prompt": "Refund 500 on ch_1?"}
    assert asked.input_ref == ev.content_ref_of_json(asked.input_json) and asked.idempotency_key is None
    assert json.loads(asked.output_json) == {"deadline": T0 + 1000, "on_timeout": "deny"}
    ask = state.steps["ask"]
    assert ask.status == "awaiting_approval" and ask.fire_at == T0 + 1000 == next_timer(state)
    assert state.cases[case]["kind"] == "approval" and state.cases[case]["deadline"] == T0 + 1000
    assert ask.approval is not None and ask.approval["case_id"] == case


def test_approving_an_approval_step_commits_it_with_who_and_why_and_goes_on():
    spec = workflow()
    state, d = start(spec)
    [asked] = events(d, ev.APPROVAL_REQUESTED)
    released = judge(state, spec, "approve", asked.quarantine.case_id, shown(asked))
    [resolved] = events(released, ev.QUARANTINE_RESOLVED)
    assert (resolved.quarantine.decision, resolved.quarantine.decided_by) == ("approve", "tenant:acme")
    record = json.loads(resolved.output_json)
    assert record["case_id"] == asked.quarantine.case_id and record["reason"] == "checked with the customer"
    [committed] = events(released, ev.STEP_COMMITTED)
    expected = {"approved": True, "by": "tenant:acme", "reason": "checked with the customer"}
    assert committed.source == "scheduler" and json.loads(committed.output_json) == expected
    assert state.steps["ask"].output == expected
    # the next step (a tool needing approval) renders its input and key and asks in turn
    [requested] = events(released, ev.APPROVAL_REQUESTED)
    assert requested.step == "refund" and commands(released) == []


# --- a requires_approval tool step: bound to its payload and key ----------------------------------


def test_a_tool_step_shows_its_rendered_input_and_key_before_its_first_attempt():
    spec = workflow()
    state, requested = approved_ask(spec)
    refund = state.steps["refund"]
    assert refund.status == "awaiting_approval" and refund.attempt == 0
    assert requested.quarantine.case_id == "run-a:refund:approval-1"
    # The human is shown exactly what the tool is sent (the payload), and the key it goes under.
    assert json.loads(refund.input_json)["payload"] == json.loads(requested.input_json)
    assert requested.idempotency_key == refund.idempotency_key
    assert json.loads(requested.input_json) == {"charge_id": "ch_1", "amount_cents": 500}
    assert requested.input_ref == content_ref({"charge_id": "ch_1", "amount_cents": 500})
    assert requested.idempotency_key is not None
    assert json.loads(requested.output_json)["on_timeout"] == "deny"
    assert state.cases["run-a:refund:approval-1"]["key"] == refund.idempotency_key


def test_an_approval_for_another_payload_is_refused_and_releases_nothing():
    spec = workflow()
    state, requested = approved_ask(spec)
    case = requested.quarantine.case_id
    other = {"input_ref": ev.content_ref_of_json('{"tool":"refund@1","payload":{"amount_cents":50000}}'),
             "idempotency_key": requested.idempotency_key}  # fmt: skip
    for bound_to in (other, {**shown(requested), "idempotency_key": "k-other"}, None, {"input_ref": None}):
        d = judge(state, spec, "approve", case, bound_to)
        [refused] = events(d)
        assert refused.event == ev.DECISION_REFUSED and "payload differs" in (refused.error or "")
        assert json.loads(refused.output_json)["case_id"] == case and refused.step == "refund"
        assert refused.event_id == f"run-a:0:decision_refused:{refused_cmd(state, bound_to)}"
        assert commands(d) == [] and state.steps["refund"].status == "awaiting_approval"
        assert "decision" not in state.cases[case]


def refused_cmd(state: RunState, bound_to: Any) -> str:
    cmd, _ = command(state, "approve", "run-a:refund:approval-1", bound_to)
    return cmd.command_id


def test_approving_releases_the_first_attempt_with_exactly_the_payload_and_key_shown():
    spec = workflow()
    state, requested = approved_ask(spec)
    d = judge(state, spec, "approve", requested.quarantine.case_id, shown(requested), now=T0 + 50)
    [resolved] = events(d, ev.QUARANTINE_RESOLVED)
    assert resolved.idempotency_key == requested.idempotency_key
    [attempt] = commands(d)
    assert (attempt.step, attempt.attempt) == ("refund", 1)
    assert json.loads(attempt.input_json)["payload"] == json.loads(requested.input_json)
    assert attempt.idempotency_key == requested.idempotency_key
    # The attempt carries the approval, bound to the payload and key shown (the adapters check both).
    assert attempt.approval is not None and attempt.approval.input_ref == requested.input_ref
    assert attempt.approval.idempotency_key == requested.idempotency_key
    assert state.steps["refund"].first_issued_at == T0 + 50  # the key's first possible use


def test_a_second_decision_on_a_decided_case_is_refused():
    spec = workflow()
    state, requested = approved_ask(spec)
    case = requested.quarantine.case_id
    judge(state, spec, "approve", case, shown(requested))
    for decision in ("deny", "approve"):
        d = judge(state, spec, decision, case, shown(requested))
        [refused] = events(d)
        assert refused.event == ev.DECISION_REFUSED and "already decided: approve" in (refused.error or "")
        assert commands(d) == []
    assert state.status == "running"


def test_a_decision_on_an_unknown_case_or_an_unknown_word_is_refused():
    spec = workflow()
    state, requested = approved_ask(spec)
    [refused] = events(judge(state, spec, "approve", "run-a:refund:approval-9", shown(requested)))
    assert refused.event == ev.DECISION_REFUSED and refused.step is None
    [refused] = events(judge(state, spec, "retry", requested.quarantine.case_id))
    assert refused.event == ev.DECISION_REFUSED and "not a decision on an approval" in (refused.error or "")


def test_deny_fails_the_run_with_who_and_why():
    spec = workflow()
    state, requested = approved_ask(spec)
    d = judge(state, spec, "deny", requested.quarantine.case_id)
    assert [e.event for e in events(d)] == [ev.QUARANTINE_RESOLVED, ev.FAILED]
    failed = events(d)[-1]
    assert "denied by tenant:acme: checked with the customer" in (failed.run.reason or "")
    assert state.status == "failed" and state.steps["refund"].status == "failed" and commands(d) == []


def test_deny_with_an_on_failure_fallback_runs_the_fallback_and_the_run_completes():
    spec = workflow(refund=FALLBACKS)
    state, requested = approved_ask(spec)
    d = judge(state, spec, "deny", requested.quarantine.case_id)
    [chosen] = events(d, ev.FALLBACK_CHOSEN)
    assert json.loads(chosen.output_json)["to"] == "notify" and state.steps["refund"].status == "fell_back"
    [notify] = commands(d)
    assert notify.step == "notify"
    receipt = commit(state, spec, "notify", {"message_id": "m-1"})
    [draft] = commands(receipt)
    assert draft.step == "receipt" and "m-1" in json.loads(draft.input_json)["prompt"]
    done = commit(state, spec, "receipt", {"text": "ok"}, now=T0 + 30)
    assert [e.event for e in events(done)] == [ev.COMPLETED]
    assert json.loads(events(done)[0].output_json)["refund"] == {"message_id": "m-1"}


def test_fail_ends_the_run_even_when_a_fallback_is_declared():
    spec = workflow(refund=FALLBACKS)
    state, requested = approved_ask(spec)
    d = judge(state, spec, "fail", requested.quarantine.case_id)
    assert [e.event for e in events(d)] == [ev.QUARANTINE_RESOLVED, ev.FAILED]
    assert "tenant:acme failed the run" in (events(d)[-1].run.reason or "")


# --- the deadline: a durable timer ------------------------------------------------------------------


def test_the_deadline_survives_a_state_round_trip_and_fires_exactly_once():
    spec = workflow(refund=FALLBACKS)
    state, requested = approved_ask(spec)
    deadline = json.loads(requested.output_json)["deadline"]
    assert deadline == T0 + 10 + 4000 and json.loads(requested.output_json)["on_timeout"] == "fallback:notify"
    state = RunState.from_json(state.to_json())  # a restart: the state is all that is left
    assert next_timer(state) == deadline
    assert due(state, deadline - 1, catalog(spec), MODES).outputs == []
    fired = due(state, deadline, catalog(spec), MODES)
    [resolved] = events(fired, ev.QUARANTINE_RESOLVED)
    assert (resolved.quarantine.decision, resolved.quarantine.decided_by) == ("expire", "scheduler")
    [chosen] = events(fired, ev.FALLBACK_CHOSEN)
    assert json.loads(chosen.output_json)["from"] == "refund"
    assert [c.step for c in commands(fired)] == ["notify"]
    assert next_timer(state) == state.steps["notify"].deadline  # the approval's timer is gone
    state = RunState.from_json(state.to_json())
    again = due(state, deadline + 60_000, catalog(spec), MODES)
    assert events(again, ev.QUARANTINE_RESOLVED) == [] and events(again, ev.FALLBACK_CHOSEN) == []
    # and a human who answers late is told the case is closed
    [refused] = events(judge(state, spec, "approve", requested.quarantine.case_id, shown(requested)))
    assert refused.event == ev.DECISION_REFUSED and "already decided: expire" in (refused.error or "")


def test_an_expired_deadline_whose_rule_is_deny_fails_the_run():
    spec = workflow()
    state, d = start(spec)
    fired = due(state, T0 + 1000, catalog(spec), MODES)
    assert [e.event for e in events(fired)] == [ev.QUARANTINE_RESOLVED, ev.FAILED]
    assert "expired" in (events(fired)[-1].run.reason or "") and state.status == "failed"


# --- a paused run: the decision is recorded, the attempt starts on resume ---------------------------


def test_an_approval_while_paused_is_recorded_and_the_attempt_starts_only_when_running():
    spec = workflow()
    state, requested = approved_ask(spec)
    state.status = "paused"
    d = judge(state, spec, "approve", requested.quarantine.case_id, shown(requested))
    assert [e.event for e in events(d)] == [ev.QUARANTINE_RESOLVED] and commands(d) == []
    assert state.steps["refund"].status == "pending" and next_timer(state) is None
    state = RunState.from_json(state.to_json())
    state.status = "running"  # resumed: the steps that are ready start
    [attempt] = commands(Decision(state, dispatch_ready(state, spec, T0 + 99, Env())))
    assert json.loads(attempt.input_json)["payload"] == json.loads(requested.input_json)
    assert attempt.idempotency_key == requested.idempotency_key
    # The attempt carries the approval, bound to the payload and key shown (the adapters check both).
    assert attempt.approval is not None and attempt.approval.input_ref == requested.input_ref
    assert attempt.approval.idempotency_key == requested.idempotency_key


def test_a_decision_while_the_run_is_being_canceled_is_refused():
    spec = workflow()
    state, requested = approved_ask(spec)
    state.status = "canceling"
    [refused] = events(judge(state, spec, "approve", requested.quarantine.case_id, shown(requested)))
    assert refused.event == ev.DECISION_REFUSED


def test_a_cancel_while_an_approval_waits_closes_the_case_and_sends_nothing():
    spec = workflow()
    state, requested = approved_ask(spec)
    cancel = ControlCommand(
        command_id="c-cancel",
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        action="cancel",
        reason="customer withdrew",
        issued_by="tenant:acme",
        issued_at=datetime.now(UTC),
    )
    d = decide(state, cancel, 0, T0 + 30, catalog(spec))
    assert [e.event for e in events(d)] == [ev.QUARANTINE_RESOLVED, ev.CANCELED] and commands(d) == []
    [closed] = events(d, ev.QUARANTINE_RESOLVED)
    assert closed.quarantine.case_id == requested.quarantine.case_id
    assert closed.quarantine.decision == "cancel"
    assert state.status == "canceled" and state.steps["refund"].status == "canceled"
    assert next_timer(state) is None  # the approval's deadline went with it
