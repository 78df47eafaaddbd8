"""Pause and resume in the scheduler's pure core (docs/quarantine.md): no new attempt and no timer while
paused, calls in flight settle and are kept, a pending reservation is given back, resume picks up."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import test_scheduler_agent as agent_kit
from test_scheduler_budgets import POLICY, budget, reply
from test_scheduler_core import CATALOG, MODES, T0, commands, commit, kinds, llm_failed, request, started

from keel.contracts import ControlCommand, RunEvent
from keel.workflows import Catalog
from services.scheduler.core import Decision, decide, due, next_timer
from services.scheduler.state import RunState


def control(state: RunState, action: str, *, cid: str | None = None, now: int = T0, **kw: Any) -> Decision:
    command = ControlCommand(
        command_id=cid or f"c-{action}",
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        action=action,
        reason="provider maintenance",
        issued_by="tenant:acme",
        issued_at=datetime.now(UTC),
    )
    return decide(state, command, 0, now, kw.get("catalog", CATALOG), **kw.get("env", {}))


def test_pause_stops_dispatch_keeps_commits_and_resume_dispatches_what_is_ready():
    state = started()  # draft_email is in flight
    d = control(state, "pause")
    assert kinds(d) == ["paused"] and commands(d) == [] and state.status == "paused"
    [paused] = d.outputs
    assert isinstance(paused, RunEvent) and paused.run.status == "paused"
    assert paused.run.reason == "paused by tenant:acme: provider maintenance"
    assert (state.paused_by, state.pause_reason) == ("tenant:acme", "provider maintenance")
    d = commit(state, "draft_email", 1, {"subject": "Hi", "body": "Hello"})
    assert d.outputs == [] and state.steps["draft_email"].status == "committed"  # kept, nothing started
    assert control(state, "pause", cid="c-again").outputs == []  # a repeat changes nothing
    d = control(state, "resume", now=T0 + 5000)
    assert kinds(d) == ["resumed"] and state.status == "running" and state.paused_by is None
    [crm] = commands(d)
    assert crm.step == "log_to_crm" and crm.attempt == 1
    assert control(state, "resume", cid="c-again").outputs == []  # resume of a running run: nothing


def test_a_failure_while_paused_schedules_its_retry_which_fires_only_after_the_resume():
    state = started()
    control(state, "pause")
    d = decide(state, llm_failed(state, "draft_email", 1), 0, T0 + 10, CATALOG)
    assert kinds(d) == ["retry_scheduled"] and commands(d) == [] and state.status == "paused"
    assert next_timer(state) is None  # no timer while paused
    assert due(state, T0 + 3_600_000, CATALOG, MODES).outputs == []
    d = control(state, "resume", now=T0 + 3_600_000)
    [again] = commands(d)
    assert (again.step, again.attempt) == ("draft_email", 2)


def test_cancel_while_paused_ends_the_run_once_nothing_is_in_flight():
    state = started()
    control(state, "pause")
    d = control(state, "cancel")
    assert kinds(d) == [] and state.status == "canceling"  # draft_email's call settles first
    d = commit(state, "draft_email", 1, {"subject": "Hi", "body": "Hello"})
    assert kinds(d) == ["canceled"] and commands(d) == [] and state.paused_by is None


def test_pause_gives_back_a_pending_reservation_and_resume_asks_again_under_a_new_attempt():
    d = decide(None, request(), 0, T0, CATALOG, budget_policy=POLICY)
    state = d.state
    assert state is not None
    [reserve] = budget(d.outputs, "reserve")
    assert reserve.reservation_id == "run-1/draft_email/1" and commands(d) == []
    d = control(state, "pause", env={"budget_policy": POLICY})
    [close] = budget(d.outputs, "close")
    assert close.reservation_id == reserve.reservation_id and close.tenant_id == "acme"
    assert state.steps["draft_email"].status == "waiting_retry"
    # The enforcer granted it before the close arrived: the grant is given straight back, nothing runs.
    d = decide(state, reply(reserve, "budget_reserved"), 0, T0 + 10, CATALOG, budget_policy=POLICY)
    assert commands(d) == [] and [c.reservation_id for c in budget(d.outputs, "close")] == [
        close.reservation_id
    ]
    d = control(state, "resume", now=T0 + 20, env={"budget_policy": POLICY})
    [again] = budget(d.outputs, "reserve")
    assert again.reservation_id == "run-1/draft_email/2" and again.amount_micros == reserve.amount_micros
    draft = state.steps["draft_email"]
    assert draft.attempt - draft.blocked == 1  # the attempt that never started is not counted
    d = decide(state, reply(again, "budget_reserved"), 0, T0 + 30, CATALOG, budget_policy=POLICY)
    [cmd] = commands(d)
    assert (cmd.step, cmd.attempt) == ("draft_email", 2)


def test_an_agent_turns_answer_while_paused_is_acted_on_at_the_resume():
    run = agent_kit.Run(agent_kit.workflow())
    [turn1] = agent_kit.commands(run.out)
    catalog = Catalog({(run.spec.name, run.spec.version): run.spec})
    assert run.state is not None
    env = {"catalog": catalog, "env": {"tools": agent_kit.tools}}
    control(run.state, "pause", **env)
    out = run.send(
        agent_kit.turn(turn1, agent_kit.call("lookup_customer", {"customer_email": "ada@example.com"}))
    )
    assert agent_kit.commands(out) == [] and run.state.status == "paused"
    d = control(run.state, "resume", **env)
    [lookup] = commands(d)
    assert (lookup.kind, lookup.call) == ("tool", "turn-1.call-0")
    assert json.loads(lookup.input_json)["payload"] == {"customer_email": "ada@example.com"}


def test_cancel_while_paused_records_a_held_turn_answer_and_ends_the_run():
    run = agent_kit.Run(agent_kit.workflow())
    [turn1] = agent_kit.commands(run.out)
    catalog = Catalog({(run.spec.name, run.spec.version): run.spec})
    assert run.state is not None
    env = {"catalog": catalog, "env": {"tools": agent_kit.tools}}
    control(run.state, "pause", **env)
    run.send(agent_kit.turn(turn1, content="done"))
    d = control(run.state, "cancel", **env)
    assert kinds(d) == ["canceled"] and commands(d) == []


def test_pause_and_resume_of_a_run_held_in_quarantine_change_nothing():
    state = started()
    state.status = "quarantined"
    assert control(state, "pause").outputs == [] and state.status == "quarantined"
    assert control(state, "resume").outputs == [] and state.status == "quarantined"


def test_a_final_answer_held_while_paused_commits_the_agent_step_at_the_resume():
    run = agent_kit.Run(agent_kit.workflow())
    [turn1] = agent_kit.commands(run.out)
    catalog = Catalog({(run.spec.name, run.spec.version): run.spec})
    assert run.state is not None
    env = {"catalog": catalog, "env": {"tools": agent_kit.tools}}
    control(run.state, "pause", **env)
    run.tick(5_000)  # far past the turn's deadline: no timer fires while paused
    run.send(agent_kit.turn(turn1, content="all done"))
    assert run.state.steps["triage"].status == "dispatched"
    d = control(run.state, "resume", **env)
    assert [e.event for e in agent_kit.events(d.outputs)] == ["resumed", "step_committed"]
    [after] = agent_kit.commands(d.outputs)
    assert after.step == "after" and run.state.steps["triage"].output == {"text": "all done"}


def test_a_paused_run_with_a_held_answer_survives_a_restore_and_resumes_from_it():
    run = agent_kit.Run(agent_kit.workflow())
    [turn1] = agent_kit.commands(run.out)
    catalog = Catalog({(run.spec.name, run.spec.version): run.spec})
    assert run.state is not None
    env = {"catalog": catalog, "env": {"tools": agent_kit.tools}}
    control(run.state, "pause", **env)
    run.send(agent_kit.turn(turn1, content=None))  # an answer with nothing in it is still an answer
    restored = RunState.from_json(run.state.to_json())
    assert restored == run.state and restored.status == "paused" and restored.paused_by == "tenant:acme"
    d = control(restored, "resume", **env)
    assert [e.event for e in agent_kit.events(d.outputs)] == ["resumed", "step_committed"]
    assert restored.steps["triage"].output == {"text": ""}
