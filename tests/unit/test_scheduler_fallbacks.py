"""Safe fallbacks in the scheduler's pure core: a step that would be quarantined or fail the run degrades
to its declared fallback-only step, whose output the steps after it see; the run completes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from keel import events as ev
from keel.contracts import CommitDetail, RunEvent, RunRequested, StepCommand, ToolDetail
from keel.workflows import Catalog, WorkflowSpec, parse_workflow
from services.scheduler.core import Decision, decide, due, next_timer
from services.scheduler.state import RunState

T0 = 1_773_059_696_000
MODES = {"refund@1": "none", "email@1": "provider_key"}.get


def workflow(**refund: Any) -> WorkflowSpec:
    """refund (tool) -> receipt (llm); notify: a fallback-only email, when refund falls back to it."""
    notify = {
        "name": "notify",
        "kind": "tool",
        "tool": "email@1",
        "fallback_only": True,
        "input": {"to": "ops@example.com", "subject": "refund {{ input.charge_id }}"},
    }
    return parse_workflow(
        {
            "name": "degrade",
            "version": 1,
            "input": {"charge_id": "string"},
            "steps": [
                {
                    "name": "refund",
                    "kind": "tool",
                    "tool": "refund@1",
                    "side_effects": True,
                    "timeout_ms": 2000,
                    "input": {"charge_id": "{{ input.charge_id }}", "amount_cents": 500},
                    **refund,
                },
                {
                    "name": "receipt",
                    "kind": "llm",
                    "model": "sim-small",
                    "needs": ["refund"],
                    "prompt": "Write a receipt for {{ steps.refund.output }}.",
                },
            ]
            + ([notify] if refund else []),
        }
    )


QUARANTINE = {"on_quarantine": {"fallback": "notify"}}
FAILURE = {"on_failure": {"fallback": "notify"}}


def catalog(spec: WorkflowSpec) -> Catalog:
    return Catalog({(spec.name, spec.version): spec})


def start(spec: WorkflowSpec) -> tuple[RunState, Decision]:
    req = RunRequested(
        request_id="req",
        run_id="run-f",
        tenant_id="acme",
        workflow=spec.name,
        input_json=json.dumps({"charge_id": "ch_1"}),
        requested_at=datetime.fromtimestamp(T0 / 1000, UTC),
    )
    d = decide(None, req, 0, T0, catalog(spec))
    assert d.state is not None
    return d.state, d


def kinds(d: Decision) -> list[str]:
    return [o.event for o in d.outputs if isinstance(o, RunEvent)]


def the(d: Decision, kind: str) -> RunEvent:
    [found] = [o for o in d.outputs if isinstance(o, RunEvent) and o.event == kind]
    return found


def commands(d: Decision) -> list[StepCommand]:
    return [o for o in d.outputs if isinstance(o, StepCommand)]


def refund_failed(state: RunState, spec: WorkflowSpec, failure_class: str, **tool: Any) -> Decision:
    fact = RunEvent(
        event_id="run-f:refund:1:tool_failed",
        run_id=state.run_id,
        tenant_id="acme",
        workflow=state.workflow,
        step="refund",
        event=ev.TOOL_FAILED,
        ts=datetime.now(UTC),
        attempt=1,
        source="adapters",
        error=f"the provider said {failure_class}",
        idempotency_key=state.steps["refund"].idempotency_key,
        input_ref="sha256:in",
        output_ref="sha256:out",
        output_json='{"status": 502}',
        tool=ToolDetail(tool="refund@1", idempotency_mode="none", failure_class=failure_class, **tool),
    )
    return decide(state, fact, 0, T0 + 10, catalog(spec))


def commit(state: RunState, spec: WorkflowSpec, step: str, output: Any, now: int = T0 + 20) -> Decision:
    fact = RunEvent(
        event_id=f"run-f:{step}:commit",
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


def finish_through_the_fallback(state: RunState, spec: WorkflowSpec) -> Decision:
    receipt = commit(state, spec, "notify", {"message_id": "m-1"})
    [draft] = commands(receipt)
    assert draft.step == "receipt" and "m-1" in json.loads(draft.input_json)["prompt"]
    return commit(state, spec, "receipt", {"text": "done"}, now=T0 + 30)


def test_an_unknown_outcome_on_a_none_tool_degrades_to_its_fallback_and_the_run_completes():
    spec = workflow(**QUARANTINE)
    state, _ = start(spec)
    d = refund_failed(state, spec, "unknown_outcome")
    assert kinds(d) == [ev.FALLBACK_CHOSEN] and state.status == "running" and state.cases == {}
    chosen = the(d, ev.FALLBACK_CHOSEN)
    record = json.loads(chosen.output_json)
    assert (record["from"], record["to"], record["failure_class"]) == ("refund", "notify", "unknown_outcome")
    assert "quarantine" in record["because"] and record["error"] == "the provider said unknown_outcome"
    # no case opens, so the effect that may exist stays visible here: the evidence and the key
    assert record["effect_may_exist"] is True and record["evidence"]["output_json"] == '{"status": 502}'
    assert (chosen.input_ref, chosen.output_ref) == ("sha256:in", "sha256:out")
    assert chosen.idempotency_key == state.steps["refund"].idempotency_key is not None
    assert state.steps["refund"].status == "fell_back" and state.steps["refund"].fallback_for == "notify"
    [notify] = commands(d)
    assert (notify.step, notify.attempt) == ("notify", 1)
    done = finish_through_the_fallback(state, spec)
    assert kinds(done) == [ev.COMPLETED]
    assert json.loads(the(done, ev.COMPLETED).output_json)["refund"] == {"message_id": "m-1"}


def test_without_a_fallback_the_same_failure_is_quarantined():
    spec = workflow()
    state, _ = start(spec)
    d = refund_failed(state, spec, "unknown_outcome")
    assert kinds(d) == [ev.QUARANTINED] and state.status == "quarantined"


def test_a_lost_attempt_found_by_the_timer_degrades_too():
    spec = workflow(**QUARANTINE)
    state, _ = start(spec)
    state = RunState.from_json(state.to_json())
    d = due(state, next_timer(state) or 0, catalog(spec), MODES)
    assert kinds(d) == [ev.FALLBACK_CHOSEN] and [c.step for c in commands(d)] == ["notify"]


def test_a_failure_that_would_fail_the_run_takes_the_on_failure_fallback():
    spec = workflow(**FAILURE)
    state, _ = start(spec)
    d = refund_failed(state, spec, "auth")
    record = json.loads(the(d, ev.FALLBACK_CHOSEN).output_json)
    assert (record["failure_class"], record["effect_may_exist"]) == ("auth", False)
    assert "never retried" in record["because"] and [c.step for c in commands(d)] == ["notify"]
    assert kinds(finish_through_the_fallback(state, spec)) == [ev.COMPLETED]


def test_on_failure_does_not_swallow_a_quarantine():
    spec = workflow(**FAILURE)  # on_failure only: an unknown outcome is still held for a human
    state, _ = start(spec)
    assert kinds(refund_failed(state, spec, "unknown_outcome")) == [ev.QUARANTINED]


def test_a_fallback_that_fails_in_turn_fails_the_run():
    spec = workflow(**FAILURE)
    state, _ = start(spec)
    refund_failed(state, spec, "auth")
    fact = RunEvent(
        event_id="run-f:notify:1:tool_failed",
        run_id=state.run_id,
        tenant_id="acme",
        workflow=state.workflow,
        step="notify",
        event=ev.TOOL_FAILED,
        ts=datetime.now(UTC),
        attempt=1,
        source="adapters",
        tool=ToolDetail(tool="email@1", idempotency_mode="provider_key", failure_class="auth"),
    )
    d = decide(state, fact, 0, T0 + 40, catalog(spec))
    assert kinds(d) == [ev.FAILED] and state.status == "failed"


def test_unchosen_fallback_steps_are_skipped_when_the_run_completes():
    spec = workflow(**QUARANTINE)
    state, d = start(spec)
    assert [c.step for c in commands(d)] == ["refund"]  # never the fallback-only step
    [receipt] = commands(commit(state, spec, "refund", {"refund_id": "re_1"}))
    assert receipt.step == "receipt"
    done = commit(state, spec, "receipt", {"text": "done"}, now=T0 + 30)
    assert kinds(done) == [ev.COMPLETED]
    assert state.steps["notify"].status == "skipped"
    assert "notify" not in json.loads(the(done, ev.COMPLETED).output_json)
