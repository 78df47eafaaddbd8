"""The scheduler's pure core: run lifecycle, DAG dispatch, retries by failure class, timers, replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from keel import events as ev
from keel.contracts import (
    CommitDetail,
    ControlCommand,
    RunEvent,
    RunRequested,
    StepCommand,
    StepDetail,
    ToolDetail,
)
from keel.workflows import Catalog
from services.scheduler.core import Decision, Rejected, decide, due, next_timer
from services.scheduler.retry import backoff_ms
from services.scheduler.state import RunState

CATALOG = Catalog.load()
MODES = {"email@1": "provider_key", "crm@1": "lookup"}.get
T0 = 1_773_059_696_000
LEAD = {"lead_email": "lead@example.com", "lead_name": "Ada", "product": "Keel"}


def request(run_id: str = "run-1", workflow: str = "outbound_email", data: object = LEAD) -> RunRequested:
    return RunRequested(
        request_id="req",
        run_id=run_id,
        tenant_id="acme",
        workflow=workflow,
        input_json=json.dumps(data),
        requested_at=datetime.fromtimestamp(T0 / 1000, UTC),
    )


def fact(state: RunState, kind: str, step: str, attempt: int, **fields: object) -> RunEvent:
    return RunEvent(
        event_id=f"{kind}-{step}-{attempt}",
        run_id=state.run_id,
        tenant_id="acme",
        workflow=state.workflow,
        step=step,
        event=kind,
        ts=datetime.now(UTC),
        attempt=attempt,
        source=fields.pop("source", "ledger"),
        **fields,
    )  # type: ignore[arg-type]


def send_failed(
    state: RunState,
    failure_class: str,
    mode: str | None = "provider_key",
    attempt: int = 1,
    retry_after_ms: int | None = None,
    effect_accepted: bool | None = None,
    blocked_reason: str | None = None,
    **fields: object,
) -> RunEvent:
    """The adapters' report that an attempt of send_email failed with `failure_class`."""
    tool = ToolDetail(
        tool="email@1",
        idempotency_mode=mode,
        failure_class=failure_class,
        retry_after_ms=retry_after_ms,
        effect_accepted=effect_accepted,
        blocked_reason=blocked_reason,
    )
    return fact(state, ev.TOOL_FAILED, "send_email", attempt, source="adapters", tool=tool, **fields)


def llm_failed(state: RunState, step: str, attempt: int) -> RunEvent:
    """The executor's report that an llm attempt failed transiently."""
    return fact(
        state,
        ev.STEP_FAILED,
        step,
        attempt,
        source="executor",
        step_detail=StepDetail(failure_class="transient"),
    )


def commit(state: RunState, step: str, attempt: int, output: object, now: int = T0) -> Decision:
    return decide(
        state,
        fact(
            state,
            ev.STEP_COMMITTED,
            step,
            attempt,
            output_json=json.dumps(output),
            commit=CommitDetail(external_id=f"id-{step}", committed_at=datetime.now(UTC)),
        ),
        0,
        now,
        CATALOG,
    )


def commands(d: Decision) -> list[StepCommand]:
    return [o for o in d.outputs if isinstance(o, StepCommand)]


def kinds(d: Decision) -> list[str]:
    return [o.event for o in d.outputs if isinstance(o, RunEvent)]


def started() -> RunState:
    d = decide(None, request(), 0, T0, CATALOG)
    assert d.state is not None
    return d.state


def test_a_request_creates_the_run_and_dispatches_the_first_step():
    d = decide(None, request(), 0, T0, CATALOG)
    assert kinds(d) == ["created", "scheduled", "started"]
    [cmd] = commands(d)
    assert (cmd.step, cmd.kind, cmd.attempt, cmd.command_id) == (
        "draft_email",
        "llm",
        1,
        "run-1/draft_email/1",
    )
    assert json.loads(cmd.input_json)["prompt"].startswith("Write a short outbound email to Ada about Keel")


def test_a_repeated_run_id_is_a_no_op():
    state = started()
    again = decide(state, request(), 0, T0 + 5, CATALOG)
    assert again.outputs == [] and again.state is state


@pytest.mark.parametrize(
    ("workflow", "data", "error_class"),
    [
        ("no_such_flow", LEAD, "unknown_workflow"),
        ("outbound_email", {"lead_email": "x"}, "invalid_input"),
        ("outbound_email", [1, 2], "invalid_input"),
    ],
)
def test_requests_that_cannot_start_a_run_are_rejected(workflow, data, error_class):
    with pytest.raises(Rejected) as err:
        decide(None, request(workflow=workflow, data=data), 0, T0, CATALOG)
    assert err.value.error_class == error_class


def test_commits_advance_the_chain_and_complete_the_run_with_a_stable_idempotency_key():
    state = started()
    d = commit(state, "draft_email", 1, {"subject": "Hi", "body": "Hello Ada"})
    [crm] = commands(d)
    assert crm.step == "log_to_crm" and crm.idempotency_key.startswith(
        "acme|outbound_email|run-1|log_to_crm|sha256:"
    )
    d = commit(state, "log_to_crm", 1, {"activity_id": "act_1"})
    [send] = commands(d)
    assert json.loads(send.input_json) == {
        "tool": "email@1",
        "payload": {"to": "lead@example.com", "subject": "Hi", "body": "Hello Ada"},
    }
    d = commit(state, "send_email", 1, {"message_id": "msg_1"})
    assert kinds(d) == ["completed"] and state.status == "completed"
    assert commit(state, "send_email", 1, {"message_id": "msg_1"}).outputs == []  # late duplicate


def _at_send(state: RunState) -> StepCommand:
    commit(state, "draft_email", 1, {"subject": "Hi", "body": "Hello"})
    return commands(commit(state, "log_to_crm", 1, {"activity_id": "a"}))[0]


def test_unknown_outcome_on_a_provider_key_adapter_is_retried_with_the_same_key_after_the_timer():
    state = started()
    first = _at_send(state)
    failed = send_failed(
        state, "unknown_outcome", "provider_key", error="read timeout", idempotency_key=first.idempotency_key
    )
    d = decide(state, failed, 0, T0 + 10, CATALOG)
    [retry] = [o for o in d.outputs if isinstance(o, RunEvent)]
    assert retry.event == "retry_scheduled" and retry.retry.failure_class == "unknown_outcome"
    assert "same key" in retry.retry.reason and retry.retry.next_attempt == 2
    fire_at = next_timer(state)
    assert fire_at == T0 + 10 + retry.retry.delay_ms
    assert due(state, fire_at - 1, CATALOG, MODES).outputs == []  # not before it is due
    [again] = commands(due(state, fire_at, CATALOG, MODES))
    assert (again.attempt, again.idempotency_key) == (2, first.idempotency_key)
    assert due(state, fire_at + 1, CATALOG, MODES).outputs == []  # fired once


def test_unknown_outcome_without_a_safe_mode_is_quarantined_not_retried():
    state = started()
    _at_send(state)
    failed = send_failed(state, "unknown_outcome", "none")
    d = decide(state, failed, 0, T0, CATALOG)
    assert kinds(d) == ["quarantined"] and commands(d) == [] and state.status == "quarantined"


@pytest.mark.parametrize("failure_class", ["auth", "validation"])
def test_auth_and_validation_failures_are_never_retried(failure_class):
    state = started()
    _at_send(state)
    failed = send_failed(state, failure_class, "provider_key", error="nope")
    d = decide(state, failed, 0, T0, CATALOG)
    assert kinds(d) == ["failed"] and state.status == "failed"


def test_rate_limits_wait_at_least_the_retry_after_and_attempts_run_out():
    state = started()
    d = decide(
        state,
        llm_failed(state, "draft_email", 1),
        0,
        T0,
        CATALOG,
    )
    assert kinds(d) == ["retry_scheduled"]
    for attempt in (2, 3):
        commands(due(state, T0 + 10**9, CATALOG, MODES))
        d = decide(
            state,
            llm_failed(state, "draft_email", attempt),
            0,
            T0,
            CATALOG,
        )
    assert kinds(d) == ["failed"] and "gave up after 3 attempts" in d.outputs[0].error
    state = started()
    _at_send(state)
    d = decide(
        state,
        send_failed(state, "rate_limited", None, retry_after_ms=7000),
        0,
        T0,
        CATALOG,
    )
    assert d.outputs[0].retry.delay_ms >= 7000


def test_stale_failures_of_an_earlier_attempt_are_ignored():
    state = started()
    stale = llm_failed(state, "draft_email", 7)
    assert decide(state, stale, 0, T0, CATALOG).outputs == []


def test_fan_out_and_join():
    d = decide(
        None,
        request(
            "run-f", "lead_enrichment", {"company": "Acme", "lead_name": "Ada", "lead_email": "ada@acme.test"}
        ),
        0,
        T0,
        CATALOG,
    )
    state = d.state
    assert sorted(c.step for c in commands(d)) == ["research_company", "research_person"]
    assert commands(commit(state, "research_company", 1, {"text": "c"})) == []  # the join waits
    [join] = commands(commit(state, "research_person", 1, {"text": "p"}))
    assert join.step == "summarize"


def test_cancel_stops_the_run_once_the_attempt_in_flight_has_settled():
    state = started()  # draft_email is in flight
    d = decide(
        state,
        ControlCommand(
            command_id="c",
            run_id="run-1",
            tenant_id="acme",
            action="cancel",
            reason="ops",
            issued_at=datetime.now(UTC),
        ),
        0,
        T0,
        CATALOG,
    )
    assert d.outputs == [] and state.status == "canceling"
    d = commit(state, "draft_email", 1, {"subject": "s", "body": "b"})
    assert kinds(d) == ["canceled"] and commands(d) == []  # its commit is kept; nothing else starts
    assert state.steps["draft_email"].status == "committed"
    assert commit(state, "log_to_crm", 1, {"activity_id": "a"}).outputs == []


def test_state_survives_its_json_form_and_replay_is_deterministic():
    a, b = started(), started()
    assert RunState.from_json(a.to_json()) == a
    da = commit(a, "draft_email", 1, {"subject": "s", "body": "b"})
    db = commit(RunState.from_json(b.to_json()), "draft_email", 1, {"subject": "s", "body": "b"})
    assert da.outputs == db.outputs
    assert backoff_ms(CATALOG.get("outbound_email").step("send_email").retry, 2, "x") == backoff_ms(
        CATALOG.get("outbound_email").step("send_email").retry, 2, "x"
    )


def test_a_tool_attempt_that_never_reports_times_out_and_is_retried_under_the_same_key():
    state = started()
    first = _at_send(state)
    deadline = int(first.deadline.timestamp() * 1000)
    assert next_timer(state) == deadline
    assert due(state, deadline - 1, CATALOG, MODES).outputs == []
    d = due(state, deadline, CATALOG, MODES)
    [retry] = d.outputs
    assert retry.event == "retry_scheduled" and retry.retry.failure_class == "unknown_outcome"
    assert "timed out" in retry.error
    [again] = commands(due(state, next_timer(state), CATALOG, MODES))
    assert (again.attempt, again.idempotency_key) == (2, first.idempotency_key)


def test_a_timed_out_tool_without_a_safe_mode_is_quarantined():
    state = started()
    first = _at_send(state)
    d = due(state, int(first.deadline.timestamp() * 1000), CATALOG, {"email@1": "none"}.get)
    assert kinds(d) == ["quarantined"] and state.status == "quarantined" and next_timer(state) is None
