"""The scheduler core keeps what happened: fixed payloads and keys, no overlapping calls, late commits,
effects accepted by a provider, cancels that let an in-flight call settle, and when runs end."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from test_scheduler_core import (
    CATALOG,
    MODES,
    T0,
    _at_send,
    commands,
    commit,
    fact,
    kinds,
    llm_failed,
    send_failed,
    started,
)

from keel import events as ev
from keel.contracts import ControlCommand, RunEvent
from keel.workflows import Catalog
from services.scheduler.core import DEFAULT_TOOL_CLIENT_TIMEOUT_MS, decide, due, next_timer
from services.scheduler.outcomes import MAX_FREE_ATTEMPTS
from services.scheduler.state import RunState


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def events_of(d) -> list[RunEvent]:
    return [o for o in d.outputs if isinstance(o, RunEvent)]


def cancel(state: RunState, now: int = T0, by: str = "ops@acme", reason: str = "lead unsubscribed"):
    command = ControlCommand(
        command_id="c-1",
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        action="cancel",
        reason=reason,
        issued_by=by,
        issued_at=datetime.now(UTC),
    )
    return decide(state, command, 0, now, CATALOG)


def reworded_send() -> Catalog:
    """The same workflow version as rendered by an upgraded scheduler whose templating differs."""
    spec = CATALOG.get("outbound_email")
    send = spec.step("send_email")
    changed = send.model_copy(
        update={"input": {**send.input, "body": "{{ steps.draft_email.output.body }}!"}}
    )
    steps = tuple(changed if s.name == "send_email" else s for s in spec.steps)
    return Catalog({(spec.name, spec.version): spec.model_copy(update={"steps": steps})})


# --- item 5: the payload and key of a step are fixed at its first attempt ---------------------------


def test_a_retry_reuses_the_first_attempts_payload_and_key_even_if_rendering_changed():
    state = started()
    first = _at_send(state)
    decide(state, send_failed(state, "unknown_outcome"), 0, T0, CATALOG)
    state = RunState.from_json(state.to_json())  # kept in the changelog, not only in memory
    [again] = commands(due(state, next_timer(state), reworded_send(), MODES))
    assert again.attempt == 2
    assert (again.input_json, again.idempotency_key) == (first.input_json, first.idempotency_key)


def test_a_timed_out_tool_attempt_is_not_repeated_before_its_deadline_plus_the_client_timeout():
    state = started()
    first = _at_send(state)
    deadline = ms(first.deadline)
    [retry] = events_of(due(state, deadline, CATALOG, MODES))
    assert retry.event == "retry_scheduled"
    not_before = deadline + DEFAULT_TOOL_CLIENT_TIMEOUT_MS
    assert ms(retry.retry.fire_at) >= not_before and next_timer(state) >= not_before
    assert commands(due(state, not_before - 1, CATALOG, MODES)) == []
    [again] = commands(due(state, next_timer(state), CATALOG, MODES))
    assert again.attempt == 2 and ms(again.deadline) == ms(again.issued_at) + 60_000


def test_the_client_timeout_is_a_parameter():
    state = started()
    deadline = ms(_at_send(state).deadline)
    [retry] = events_of(due(state, deadline, CATALOG, MODES, tool_timeout_ms=30_000))
    assert ms(retry.retry.fire_at) >= deadline + 30_000


def test_a_timed_out_llm_attempt_has_no_call_to_wait_for():
    state = started()
    deadline = state.steps["draft_email"].deadline
    d = due(state, deadline, CATALOG, MODES)
    assert ms(events_of(d)[0].retry.fire_at) < deadline + DEFAULT_TOOL_CLIENT_TIMEOUT_MS


# --- late facts: a commit for a live step is never lost ---------------------------------------------


def test_a_commit_naming_an_earlier_attempt_while_the_step_waits_to_retry_commits_it():
    state = started()
    _at_send(state)
    decide(state, send_failed(state, "unknown_outcome"), 0, T0, CATALOG)
    assert next_timer(state) is not None
    d = commit(state, "send_email", 1, {"message_id": "m-1"}, now=T0 + 1)
    assert kinds(d) == ["completed"] and state.steps["send_email"].status == "committed"
    assert next_timer(state) is None


def test_a_commit_naming_an_earlier_attempt_while_a_newer_one_is_in_flight_commits_it():
    state = started()
    first = _at_send(state)
    due(state, ms(first.deadline), CATALOG, MODES)
    [second] = commands(due(state, next_timer(state), CATALOG, MODES))
    assert second.attempt == 2 and next_timer(state) == ms(second.deadline)
    d = commit(state, "send_email", 1, {"message_id": "m-1"})
    assert kinds(d) == ["completed"] and next_timer(state) is None
    assert decide(state, send_failed(state, "transient", attempt=2), 0, T0, CATALOG).outputs == []


def _failed_by_timeouts() -> RunState:
    state = started()
    for _ in range(3):  # draft_email: three attempts, each timing out
        due(state, next_timer(state), CATALOG, MODES)
        if state.status == "running":
            due(state, next_timer(state), CATALOG, MODES)
    assert state.status == "failed"
    return state


def test_a_commit_arriving_after_the_run_failed_by_timeouts_is_recorded_in_its_state():
    state = _failed_by_timeouts()
    d = commit(state, "draft_email", 2, {"subject": "s", "body": "b"})
    assert d.outputs == [] and state.status == "failed"  # the run stays failed: no step starts
    step = state.steps["draft_email"]
    assert (step.status, step.output, step.external_id) == (
        "committed",
        {"subject": "s", "body": "b"},
        "id-draft_email",
    )


# --- item 18: an effect the provider accepted is never forgotten ------------------------------------


def test_a_drifted_answer_to_an_accepted_call_quarantines_the_step_with_its_evidence():
    state = started()
    first = _at_send(state)
    drifted = send_failed(
        state,
        "validation",
        effect_accepted=True,
        error="output breaks email@1: message_id is null",
        idempotency_key=first.idempotency_key,
        input_ref="sha256:in",
        output_ref="sha256:out",
        output_json='{"message_id": null}',
    )
    d = decide(state, drifted, 0, T0, CATALOG)
    [held] = events_of(d)
    assert held.event == "quarantined" and state.status == "quarantined"
    assert (held.output_ref, held.output_json) == ("sha256:out", '{"message_id": null}')
    # the case shows the payload the provider was sent (what an edit would replace), by value and ref
    sent = json.loads(first.input_json)["payload"]
    assert json.loads(held.input_json) == sent and held.input_ref == ev.content_ref(sent)
    assert held.error == drifted.error and held.idempotency_key == first.idempotency_key
    assert "accepted" in held.quarantine.reason and held.quarantine.failure_class == "validation"


def test_an_accepted_call_whose_attempts_ran_out_is_quarantined_not_failed():
    state = started()
    _at_send(state)
    for attempt in range(1, 6):
        d = decide(
            state, send_failed(state, "transient", attempt=attempt, effect_accepted=True), 0, T0, CATALOG
        )
        if attempt < 5:
            commands(due(state, next_timer(state), CATALOG, MODES))
    assert kinds(d) == ["quarantined"] and state.status == "quarantined"


def test_attempts_that_ran_out_on_unknown_outcomes_are_quarantined_not_failed():
    state = started()
    _at_send(state)
    for attempt in range(1, 6):
        d = decide(state, send_failed(state, "unknown_outcome", attempt=attempt), 0, T0, CATALOG)
        if attempt < 5:
            commands(due(state, next_timer(state), CATALOG, MODES))
    assert kinds(d) == ["quarantined"] and "gave up after 5 attempts" in events_of(d)[0].quarantine.reason


# --- item 18: a cancel lets the call in flight settle -----------------------------------------------


def test_a_cancel_while_a_tool_call_is_in_flight_waits_for_it_and_keeps_its_commit():
    state = started()
    commit(state, "draft_email", 1, {"subject": "Hi", "body": "Hello"})  # log_to_crm now in flight
    d = cancel(state)
    assert d.outputs == [] and state.status == "canceling" and next_timer(state) is not None
    d = commit(state, "log_to_crm", 1, {"activity_id": "a"}, now=T0 + 50)
    assert commands(d) == [] and kinds(d) == ["canceled"]  # send_email never starts
    assert state.status == "canceled" and state.steps["log_to_crm"].status == "committed"
    [done] = events_of(d)
    assert "ops@acme" in done.run.reason and "lead unsubscribed" in done.run.reason
    assert state.ended_at == T0 + 50 and next_timer(state) is None


def test_a_cancel_whose_in_flight_call_ends_unknown_under_no_safe_mode_is_quarantined():
    state = started()
    _at_send(state)
    cancel(state)
    d = decide(state, send_failed(state, "unknown_outcome", mode="none"), 0, T0 + 5, CATALOG)
    assert kinds(d) == ["quarantined"] and commands(d) == [] and state.status == "quarantined"
    assert "cancel" in events_of(d)[0].quarantine.reason


def test_a_cancel_settles_an_unknown_outcome_by_repeating_the_same_key_and_keeps_its_commit():
    # Under provider_key the repeat is answered with the first call's result: the effect that happened
    # is committed, the run then ends canceled, and nothing after the step starts.
    state = started()
    first = _at_send(state)
    cancel(state)
    d = decide(state, send_failed(state, "unknown_outcome"), 0, T0 + 5, CATALOG)
    assert kinds(d) == ["retry_scheduled"] and state.status == "canceling"
    d = due(state, next_timer(state), CATALOG, MODES)
    [repeat] = commands(d)
    assert (repeat.step, repeat.attempt, repeat.idempotency_key) == ("send_email", 2, first.idempotency_key)
    assert repeat.input_json == first.input_json
    d = commit(state, "send_email", 2, {"message_id": "m"}, now=T0 + 10_000)
    assert kinds(d) == ["canceled"] and state.steps["send_email"].status == "committed"
    assert commands(d) == []


def test_a_cancel_whose_in_flight_call_times_out_is_quarantined_as_unknown():
    state = started()
    first = _at_send(state)
    cancel(state)
    d = due(state, ms(first.deadline), CATALOG, MODES)
    assert kinds(d) == ["quarantined"] and commands(d) == []
    assert events_of(d)[0].quarantine.failure_class == "unknown_outcome"


def test_a_cancel_whose_in_flight_call_is_refused_ends_the_run_canceled():
    state = started()
    _at_send(state)
    cancel(state)
    d = decide(state, send_failed(state, "auth"), 0, T0 + 5, CATALOG)
    assert kinds(d) == ["canceled"] and state.status == "canceled" and state.ended_at == T0 + 5


def test_a_cancel_with_nothing_in_flight_ends_the_run_at_once():
    state = started()
    decide(state, llm_failed(state, "draft_email", 1), 0, T0, CATALOG)  # waiting to retry
    d = cancel(state, now=T0 + 7)
    assert kinds(d) == ["canceled"] and state.status == "canceled" and state.ended_at == T0 + 7
    assert due(state, T0 + 10**9, CATALOG, MODES).outputs == []


def test_a_cancel_while_a_tool_step_waits_to_repeat_an_unknown_outcome_lets_the_repeat_settle_it():
    state = started()
    _at_send(state)
    decide(state, send_failed(state, "unknown_outcome"), 0, T0, CATALOG)  # provider_key: a retry waits
    d = cancel(state)
    assert d.outputs == [] and state.status == "canceling" and next_timer(state) is not None
    [repeat] = commands(due(state, next_timer(state), CATALOG, MODES))
    assert repeat.attempt == 2
    d = decide(state, send_failed(state, "unknown_outcome", attempt=2, mode="none"), 0, T0 + 9_000, CATALOG)
    assert kinds(d) == ["quarantined"]  # a repeat that cannot settle it either: held, never forgotten


# --- item 19 and retention -------------------------------------------------------------------------


def test_a_retry_after_is_capped():
    state = started()
    _at_send(state)
    d = decide(state, send_failed(state, "rate_limited", retry_after_ms=10**12), 0, T0, CATALOG)
    [retry] = events_of(d)
    assert 5000 <= retry.retry.delay_ms <= 300_000 and "capped" in retry.retry.reason


def test_a_call_the_adapter_never_made_does_not_use_up_an_attempt():
    state = started()
    _at_send(state)  # send_email: max_attempts 5
    attempt = 0
    for blocked in ["circuit_open"] * 8 + [None] * 5:
        attempt += 1
        d = decide(
            state, send_failed(state, "transient", attempt=attempt, blocked_reason=blocked), 0, T0, CATALOG
        )
        if kinds(d) != ["retry_scheduled"]:
            break
        commands(due(state, next_timer(state), CATALOG, MODES))
    assert attempt == 13 and kinds(d) == ["failed"] and "gave up after 5 attempts" in events_of(d)[0].error


def test_a_run_records_when_it_completed_or_failed():
    state = started()
    _at_send(state)
    commit(state, "send_email", 1, {"message_id": "m"}, now=T0 + 99)
    assert state.status == "completed" and state.ended_at == T0 + 99
    state = started()
    _at_send(state)
    decide(state, send_failed(state, "auth"), 0, T0 + 42, CATALOG)
    assert state.status == "failed" and state.ended_at == T0 + 42


def test_a_late_step_fact_from_the_scheduler_itself_is_ignored():
    state = started()
    echo = fact(state, ev.STEP_COMMITTED, "draft_email", 1, source="scheduler")
    assert (
        decide(state, echo, 0, T0, CATALOG).outputs == []
        and state.steps["draft_email"].status == "dispatched"
    )
    assert json.loads(state.to_json())["version"] >= 2


def test_a_provider_that_is_never_called_still_ends_the_run_eventually():
    state = started()
    _at_send(state)
    for attempt in range(1, 100):
        refused = send_failed(state, "transient", attempt=attempt, blocked_reason="circuit_open")
        d = decide(state, refused, 0, T0, CATALOG)
        if kinds(d) != ["retry_scheduled"]:
            break
        commands(due(state, next_timer(state), CATALOG, MODES))
    assert kinds(d) == ["failed"] and attempt == MAX_FREE_ATTEMPTS + 5
