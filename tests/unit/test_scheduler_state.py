"""The scheduler's run state in its changelog: versioned, and every released version restores."""

from __future__ import annotations

import json

import pytest
from test_scheduler_core import CATALOG, MODES, T0, _at_send, commands, decide, send_failed, started

from keel.schemas import REPO_ROOT
from services.scheduler.core import due, next_timer
from services.scheduler.state import STATE_VERSION, RunState

GOLDEN = REPO_ROOT / "tests" / "golden" / "scheduler_state"


def test_the_state_carries_its_version():
    assert json.loads(started().to_json())["version"] == STATE_VERSION == 6


@pytest.mark.parametrize("with_ended_at", [False, True])
def test_a_stored_v1_state_restores_and_the_run_carries_on(with_ended_at):
    """v1.json was written by the release before versioning: a run whose send waits to retry."""
    raw = json.loads((GOLDEN / "v1.json").read_text())
    assert "version" not in raw
    if with_ended_at:
        raw["ended_at"] = None
    state = RunState.from_json(json.dumps(raw).encode())
    assert state.version == STATE_VERSION and state.steps["send_email"].status == "waiting_retry"
    assert RunState.from_json(state.to_json()) == state
    [again] = commands(due(state, next_timer(state), CATALOG, MODES))
    assert again.attempt == 2 and again.idempotency_key.startswith("acme|outbound_email|run-1|send_email|")
    assert state.steps["send_email"].idempotency_key == again.idempotency_key  # kept from now on


def test_a_state_written_by_a_newer_release_is_refused_loudly():
    raw = json.loads(started().to_json())
    raw["version"] = STATE_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        RunState.from_json(json.dumps(raw).encode())


def test_a_state_with_a_field_its_version_does_not_have_is_refused_rather_than_dropped():
    raw = json.loads(started().to_json())
    raw["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        RunState.from_json(json.dumps(raw).encode())


def test_the_current_form_round_trips_mid_run():
    state = started()
    _at_send(state)
    decide(state, send_failed(state, "unknown_outcome"), 0, T0, CATALOG)
    assert RunState.from_json(state.to_json()) == state


def test_a_restore_keeps_going_past_a_newer_release_s_state_and_keeps_what_it_knows():
    from services.scheduler.runstore import decode_state

    state = started()
    raw = json.loads(state.to_json())
    raw["version"] = STATE_VERSION + 1
    raw["surprise"] = 1
    raw["steps"]["send_email"]["also_new"] = True
    kept = decode_state(json.dumps(raw).encode())
    assert kept == state  # one partition's restore never stops on a record from a later release


def test_a_copy_is_the_same_state_and_the_core_changing_it_leaves_the_original_as_it_was():
    state = started()
    _at_send(state)
    before = state.to_json()
    copy = state.copy()
    assert copy == state and copy.to_json() == before
    # What the core does to the state it is given: statuses, attempts, timers, outputs replaced.
    step = next(iter(copy.steps.values()))
    step.status, step.attempt, step.output = "failed", step.attempt + 7, {"replaced": True}
    copy.status, copy.input["added"] = "failed", 1
    assert copy != state
    assert state.to_json() == before  # an aborted batch leaves no trace in the committed state
