"""Fair dispatch, the pure parts: limits and their configuration, holding and releasing a run's attempts,
the tenants' counts and queues (docs/tenancy.md section 6)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from scheduler_kit import STEP, one_step, request

from keel import events as ev
from keel.contracts import ControlCommand, RunEvent, StepCommand
from services.scheduler.config import SchedulerSettings
from services.scheduler.core import start_run
from services.scheduler.fair import FairPolicy, TenantLimit, footprint, hold, parse_limits, release
from services.scheduler.ledger import Ledger
from services.scheduler.state import CANCELING, DISPATCHED, PAUSED, WAITING_RETRY, RunState
from services.scheduler.verdicts import Decision

SPEC = one_step()


class _One:
    def get(self, name, version=None):
        return SPEC


def started(run_id: str, tenant: str = "acme", now: int = 1_000) -> Decision:
    return start_run(replace(request(run_id), tenant_id=tenant), 0, now, _One())


def held_run(run_id: str, tenant: str = "acme", now: int = 1_000) -> RunState:
    decision = hold(started(run_id, tenant, now), 0, now)
    assert decision.state is not None
    return decision.state


# -- configuration -----------------------------------------------------------------------------------


def test_limits_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("KEEL_TENANT_MAX_INFLIGHT", "4")
    monkeypatch.setenv(
        "KEEL_TENANT_LIMITS", json.dumps({"acme": {"max_inflight": 1}, "globex": {"weight": 3}})
    )
    policy = SchedulerSettings().fair_policy()
    assert policy.on
    assert (policy.limit("acme"), policy.limit("globex"), policy.limit("initech")) == (1, 12, 4)
    assert (policy.weight("acme"), policy.weight("globex")) == (1, 3)


def test_no_default_limit_and_no_override_is_off_and_zero_is_no_limit():
    assert not parse_limits(0, "").on
    policy = parse_limits(5, json.dumps({"acme": {"max_inflight": 0}}))
    assert policy.limit("acme") is None and policy.limit("globex") == 5


@pytest.mark.parametrize(
    ("default", "raw", "says"),
    [
        (-1, "", "KEEL_TENANT_MAX_INFLIGHT"),
        (1, "{not json", "not JSON"),
        (1, "[1, 2]", "JSON object"),
        (1, json.dumps({"acme": 3}), "acme"),
        (1, json.dumps({"acme": {"max_inflight": -2}}), "max_inflight"),
        (1, json.dumps({"acme": {"max_inflight": "3"}}), "max_inflight"),
        (1, json.dumps({"acme": {"weight": 0}}), "weight"),
        (1, json.dumps({"acme": {"limit": 3}}), "acme"),
    ],
)
def test_a_malformed_limit_is_refused_naming_what_is_wrong(default, raw, says):
    with pytest.raises(ValueError, match=says):
        parse_limits(default, raw)


# -- one run: hold and release -----------------------------------------------------------------------


def test_an_attempt_beyond_the_room_is_held_in_place_of_its_command():
    decision = started("run-1")
    [cmd] = [o for o in decision.outputs if isinstance(o, StepCommand)]
    out = hold(decision, 0, 5_000)
    assert not any(isinstance(o, StepCommand) for o in out.outputs)
    queued = [o for o in out.outputs if isinstance(o, RunEvent) and o.event == ev.STEP_QUEUED]
    assert [(q.step, q.attempt) for q in queued] == [(STEP, cmd.attempt)]
    step = out.state.steps[STEP]
    assert (step.status, step.queued_at, step.deadline, step.fire_at) == (WAITING_RETRY, 5_000, None, None)
    assert footprint(out.state).held == ((5_000, STEP, ""),) and footprint(out.state).inflight == 0


def test_with_room_the_commands_go_as_the_core_issued_them():
    decision = started("run-1")
    assert hold(decision, 1, 5_000).outputs == decision.outputs
    assert hold(decision, None, 5_000).outputs == decision.outputs


def test_a_released_attempt_carries_exactly_the_command_it_would_have_carried():
    original = next(o for o in started("run-1").outputs if isinstance(o, StepCommand))
    state = held_run("run-1")
    out = release(state, SPEC, (1_000, STEP, ""), 9_000)
    released, cmd = out.outputs
    assert isinstance(released, RunEvent) and released.event == ev.STEP_RELEASED
    assert isinstance(cmd, StepCommand)
    assert (cmd.command_id, cmd.attempt, cmd.input_json, cmd.idempotency_key) == (
        original.command_id,
        original.attempt,
        original.input_json,
        original.idempotency_key,
    )
    assert state.steps[STEP].status == DISPATCHED and state.steps[STEP].queued_at is None
    assert release(state, SPEC, (1_000, STEP, ""), 9_001).outputs == []  # once only


def test_a_paused_run_gives_its_slots_back_and_its_held_attempts_wait_for_the_resume():
    running = started("run-1").state
    assert running is not None and footprint(running).inflight == 1
    running.status = PAUSED
    assert footprint(running).inflight == 0
    state = held_run("run-2")
    state.status = PAUSED
    assert footprint(state).held == () and release(state, SPEC, (1_000, STEP, ""), 2_000).outputs == []


def test_a_canceling_run_still_counts_its_calls_in_flight():
    state = started("run-1").state
    assert state is not None
    state.status = CANCELING
    assert footprint(state).inflight == 1


def test_a_canceled_run_releases_nothing():
    from services.scheduler.cancel import on_cancel

    state = held_run("run-1")
    cancel = ControlCommand(
        command_id="c1",
        run_id="run-1",
        tenant_id="acme",
        action="cancel",
        issued_at=datetime.now(UTC),
        issued_by="op",
    )
    canceled = on_cancel(state, cancel, SPEC, 2_000).state
    assert canceled is not None and footprint(canceled).held == ()
    assert release(canceled, SPEC, (1_000, STEP, ""), 3_000).outputs == []


# -- the tenants: counts, queues, weights -----------------------------------------------------------


def test_the_ledger_counts_per_tenant_and_queues_in_the_order_attempts_became_ready():
    ledger = Ledger(FairPolicy(2))
    states = {
        "a1": started("a1").state,
        "a2": started("a2").state,
        "a3": held_run("a3", now=3_000),
        "a4": held_run("a4", now=2_000),
        "g1": started("g1", "globex").state,
    }
    ledger.rebuild(states.items())
    assert (ledger.inflight("acme"), ledger.inflight("globex")) == (2, 1)
    assert ledger.queued("acme") == 2 and ledger.free("acme") == 0 and ledger.free("globex") == 1
    assert ledger.room("g2", started("g2", "globex").state, 1) == 1
    assert ledger.room("a5", started("a5").state, 1) == 0
    assert ledger.next_held("acme") == ("a4", (2_000, STEP, ""))  # ready first, first out
    assert ledger.next_held("acme") == ("a3", (3_000, STEP, ""))
    assert ledger.next_held("acme") is None


def test_an_update_moves_the_counts_and_drops_what_is_no_longer_held():
    ledger = Ledger(FairPolicy(1))
    state = held_run("a1")
    ledger.update("a1", state)
    assert ledger.queued("acme") == 1
    release(state, SPEC, (1_000, STEP, ""), 2_000)
    ledger.update("a1", state)
    assert (ledger.inflight("acme"), ledger.queued("acme")) == (1, 0)
    assert ledger.next_held("acme") is None  # the stale queue entry is skipped
    ledger.update("a1", None)
    assert ledger.inflight("acme") == 0


def test_weighted_round_robin_gives_each_tenant_its_weight_in_turns():
    policy = FairPolicy(10, {"acme": TenantLimit(None, 1), "globex": TenantLimit(None, 2)})
    ledger = Ledger(policy)
    ledger.rebuild([(f"{t}{i}", held_run(f"{t}{i}", t, now=i)) for t in ("acme", "globex") for i in range(3)])
    order = []
    for tenant in ledger.rounds(ledger.waiting_tenants()):
        found = ledger.next_held(tenant)
        if found is None:
            continue
        order.append(tenant)
        ledger.update(found[0], None)  # as if released and ended: its entry leaves
    assert order == ["acme", "globex", "globex", "acme", "globex", "acme"]


def test_a_limit_only_for_one_tenant_holds_that_tenant_alone():
    ledger = Ledger(parse_limits(0, json.dumps({"acme": {"max_inflight": 1}})))
    assert ledger.policy.on
    ledger.update("a1", started("a1").state)
    assert ledger.room("a2", started("a2").state, 1) == 0
    assert ledger.room("g1", started("g1", "globex").state, 1) is None


# -- paid attempts: the gate stands before the reservation ---------------------------------------------


def test_a_paid_attempt_is_held_before_it_reserves_and_its_release_reserves():
    from test_scheduler_budgets import POLICY, Run, budget, llm_spec, reply

    run = Run(llm_spec(budget_usd=0.5))
    before_reserve = run.state
    assert before_reserve is not None and footprint(before_reserve).inflight == 1  # RESERVING is in flight
    (reserve,) = budget(run.out, "reserve")
    # With no room, the reserve itself is held: nothing reaches the enforcer, nothing is reserved.
    decision = hold(Decision(before_reserve.copy(), run.out), 0, 2_000, before=None)
    assert budget(decision.outputs) == [] and [o.event for o in decision.outputs][-1] == ev.STEP_QUEUED
    state = decision.state
    assert state is not None and footprint(state).inflight == 0
    assert footprint(state).held == ((2_000, STEP, ""),)
    # Its release sends the reserve (not the command): the worst case is reserved only now.
    out = release(state, run.spec, (2_000, STEP, ""), 3_000, POLICY)
    assert [getattr(o, "event", None) for o in out.outputs][0] == ev.STEP_RELEASED
    (again,) = budget(out.outputs, "reserve")
    assert again.reservation_id == reserve.reservation_id and again.attempt == reserve.attempt
    assert not [o for o in out.outputs if isinstance(o, StepCommand)]
    # The command that follows the grant continues an attempt in flight: never held, even with no room.
    run.state = out.state
    granted = run.send(reply(again, "budget_reserved"))
    assert run.state is not None
    kept = hold(Decision(run.state, granted), 0, 4_000, before=out.state)
    assert [o.attempt for o in kept.outputs if isinstance(o, StepCommand)] == [1]
