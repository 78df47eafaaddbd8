"""The budget enforcer's core: reserve (granted, deferred, exceeded), spend, close, lapse, forget,
warnings, repeated commands and day rollover, on integer micro-dollars."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from keel.budget_limits import Limits
from keel.contracts import BudgetCommand, RunEvent
from services.budget.core import DAY_MS, Invalid, decide, expire, next_due
from services.budget.state import TenantBudgets

T0 = int(datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp() * 1000)
USD = 1_000_000
LIMITS = Limits.from_json('{"tenant_day_usd": {"*": 10.0}}')


def cmd(action: str, rid: str = "r1/s/1", amount: int = 0, *, at: int = T0, **over: Any) -> BudgetCommand:
    run, step, attempt = (rid.split("/") + ["", "", "1"])[:3] if "/" in rid else (rid, "s", "1")
    fields: dict[str, Any] = {
        "command_id": f"{action}:{rid}:{over.pop('n', 0)}",
        "action": action,
        "tenant_id": "acme",
        "run_id": run,
        "workflow": "wf",
        "step": step,
        "attempt": int(attempt),
        "agent_id": "agent_v1",
        "reservation_id": rid,
        "amount_micros": amount,
        "issued_at": datetime.fromtimestamp(at / 1000, UTC),
        "expires_at": datetime.fromtimestamp((at + 60_000) / 1000, UTC),
    }
    fields.update(over)
    return BudgetCommand(**fields)


def run(
    commands: list[BudgetCommand], limits: Limits = LIMITS, now: int = T0, state: TenantBudgets | None = None
) -> tuple[TenantBudgets, list[RunEvent]]:
    facts: list[RunEvent] = []
    for c in commands:
        state, out = decide(state, c, now, limits)
        facts += out
    assert state is not None
    return state, facts


def kinds(facts: list[RunEvent]) -> list[str]:
    return [f.event for f in facts]


def tenant(state: TenantBudgets, day: str = "2026-11-30") -> tuple[int, int]:
    s = state.scopes[f"tenant:{day}"]
    return s.spent, s.reserved


def test_a_reserve_that_fits_everywhere_is_held_in_every_scope_of_the_unit():
    state, facts = run([cmd("reserve", "r1/s/1", 3 * USD)])
    assert kinds(facts) == ["budget_reserved"]
    assert set(state.scopes) == {
        "run:r1",
        "step:r1/s",
        "agent:agent_v1:2026-11-30",
        "workflow:wf:2026-11-30",
        "tenant:2026-11-30",
    }
    assert all(s.reserved == 3 * USD for s in state.scopes.values())
    [fact] = facts
    assert fact.source == "budget" and fact.run_id == "r1" and fact.step == "s" and fact.attempt == 1
    assert fact.budget is not None and fact.budget.reservation_id == "r1/s/1"
    assert fact.budget.scope == "tenant:2026-11-30" and fact.budget.limit_micros == 10 * USD
    assert fact.budget.requested_micros == 3 * USD and fact.budget.reserved_usd == 3.0


def test_a_reserve_blocked_only_by_other_holds_is_deferred_with_when_to_ask_again():
    state, facts = run([cmd("reserve", "r1/s/1", 6 * USD), cmd("reserve", "r2/s/1", 6 * USD)])
    assert kinds(facts) == ["budget_reserved", "budget_deferred"]
    deferred = facts[1].budget
    assert deferred is not None and deferred.scope == "tenant:2026-11-30"
    assert (deferred.spent_micros, deferred.reserved_micros, deferred.requested_micros) == (
        0,
        6 * USD,
        6 * USD,
    )
    assert deferred.retry_after_ms == 5000  # the blocking hold lapses in 60 s: clamped to 5 s
    assert "r2/s/1" not in state.reservations and tenant(state) == (0, 6 * USD)  # nothing held


def test_retry_after_is_the_time_to_the_earliest_lapse_within_bounds():
    soon = cmd("reserve", "r1/s/1", 6 * USD, expires_at=datetime.fromtimestamp((T0 + 1500) / 1000, UTC))
    _, facts = run([soon, cmd("reserve", "r2/s/1", 6 * USD)])
    assert facts[1].budget is not None and facts[1].budget.retry_after_ms == 1500
    lapsing = cmd("reserve", "r1/s/1", 6 * USD, expires_at=datetime.fromtimestamp((T0 + 10) / 1000, UTC))
    _, facts = run([lapsing, cmd("reserve", "r2/s/1", 6 * USD)])
    assert facts[1].budget is not None and facts[1].budget.retry_after_ms == 200


def test_a_reserve_whose_own_worst_case_passes_the_limit_on_top_of_spend_is_exceeded():
    state, facts = run(
        [
            cmd("reserve", "r1/s/1", 4 * USD),
            cmd("spend", "r1/s/1", 4 * USD),
            cmd("close", "r1/s/1"),
            cmd("reserve", "r2/s/1", 7 * USD),
        ]
    )
    assert kinds(facts) == ["budget_reserved", "budget_exceeded"]
    exceeded = facts[1].budget
    assert exceeded is not None and exceeded.scope == "tenant:2026-11-30"
    assert (exceeded.limit_micros, exceeded.spent_micros, exceeded.requested_micros) == (
        10 * USD,
        4 * USD,
        7 * USD,
    )
    assert exceeded.limit_usd == 10.0 and exceeded.spent_usd == 4.0 and exceeded.requested_usd == 7.0
    assert tenant(state) == (4 * USD, 0)


def test_exceeded_wins_over_deferred_and_the_run_limit_is_judged_first():
    commands = [
        cmd("reserve", "r1/a/1", 2 * USD, run_limit_micros=5 * USD),
        cmd("spend", "r1/a/1", 2 * USD),
        cmd("reserve", "r1/b/1", 4 * USD, run_limit_micros=5 * USD),
    ]
    _, facts = run(commands)
    assert kinds(facts) == ["budget_reserved", "budget_exceeded"]
    assert facts[1].budget is not None and facts[1].budget.scope == "run:r1"


def test_a_run_limit_is_lowered_by_a_later_command_never_raised():
    state, _ = run(
        [
            cmd("reserve", "r1/a/1", USD, run_limit_micros=3 * USD),
            cmd("reserve", "r1/b/1", USD, run_limit_micros=9 * USD),
        ]
    )
    assert state.scopes["run:r1"].limit == 3 * USD
    _, facts = run([cmd("reserve", "r1/c/1", USD, run_limit_micros=2 * USD)], state=state)
    assert facts[0].event == "budget_deferred"  # 2 held + 1 asked > the lowered 2
    assert facts[0].budget is not None and facts[0].budget.limit_micros == 2 * USD


def test_a_step_envelope_holds_all_its_units():
    env = {"step_limit_micros": 3 * USD}
    _, facts = run(
        [
            cmd("reserve", "r1/s/1", 2 * USD, call="turn-1", **env),
            cmd("reserve", "r1/s/2", 2 * USD, call="turn-2", **env),
        ]
    )
    assert kinds(facts) == ["budget_reserved", "budget_deferred"]
    assert facts[1].budget is not None and facts[1].budget.scope == "step:r1/s"


def test_agent_and_workflow_day_limits_from_configuration():
    limits = Limits.from_json('{"agent_day_usd": {"agent_v1": 1.0}, "workflow_day_usd": {"wf": 2.0}}')
    _, facts = run([cmd("reserve", "r1/s/1", 1_500_000)], limits)
    assert kinds(facts) == ["budget_exceeded"] and facts[0].budget is not None
    assert facts[0].budget.scope == "agent:agent_v1:2026-11-30"
    _, facts = run([cmd("reserve", "r1/s/1", 1_500_000, agent_id="other")], limits)
    assert kinds(facts) == ["budget_reserved"]
    _, facts = run([cmd("reserve", "r1/s/1", 2_500_000, agent_id="other")], limits)
    assert facts[0].budget is not None and facts[0].budget.scope == "workflow:wf:2026-11-30"


def test_spend_moves_held_money_to_spent_and_close_releases_the_rest():
    state, facts = run([cmd("reserve", "r1/s/1", 5 * USD), cmd("spend", "r1/s/1", 2 * USD)])
    assert tenant(state) == (2 * USD, 3 * USD) and state.reservations["r1/s/1"].held == 3 * USD
    state, facts = run([cmd("close", "r1/s/1")], state=state)
    assert facts == [] and tenant(state) == (2 * USD, 0)
    assert all(s.reserved == 0 for s in state.scopes.values())
    assert state.reservations["r1/s/1"].closed


def test_a_spend_beyond_its_hold_is_counted_in_full_and_frees_no_more_than_the_hold():
    state, _ = run(
        [
            cmd("reserve", "r1/s/1", 2 * USD),
            cmd("reserve", "r2/s/1", 3 * USD),
            cmd("spend", "r1/s/1", 3 * USD),
        ]
    )
    assert tenant(state) == (3 * USD, 3 * USD)  # r2's hold untouched


def test_a_spend_with_no_reservation_is_counted_all_the_same():
    state, _ = run([cmd("reserve", "r9/s/1", USD), cmd("spend", "r9/s/2", 2 * USD)])
    assert tenant(state) == (2 * USD, USD) and state.scopes["run:r9"].spent == 2 * USD


def test_a_spend_after_its_run_was_forgotten_counts_for_the_day_and_revives_no_run_scope():
    state, _ = run([cmd("reserve", "r9/s/1", USD), cmd("forget", "r9", run_id="r9", reservation_id="")])
    state, _ = run([cmd("spend", "r9/s/1", 2 * USD)], state=state)
    assert tenant(state) == (2 * USD, 0) and not [k for k in state.scopes if "r9" in k]


def test_a_repeated_spend_is_counted_once():
    state, _ = run(
        [cmd("reserve", "r1/s/1", 5 * USD), cmd("spend", "r1/s/1", USD), cmd("spend", "r1/s/1", USD)]
    )
    assert tenant(state) == (USD, 4 * USD)
    state, _ = run([cmd("spend", "r1/s/1", USD, n=1)], state=state)  # another spend: counted
    assert tenant(state) == (2 * USD, 3 * USD)


def test_a_repeated_reserve_is_answered_again_and_never_held_twice():
    state, facts = run([cmd("reserve", "r1/s/1", 4 * USD), cmd("reserve", "r1/s/1", 4 * USD, n=1)])
    assert kinds(facts) == ["budget_reserved", "budget_reserved"]
    assert facts[0].event_id == facts[1].event_id  # the same answer: readers de-duplicate it
    assert tenant(state) == (0, 4 * USD)
    state, facts = run([cmd("close", "r1/s/1"), cmd("reserve", "r1/s/1", 4 * USD, n=2)], state=state)
    assert kinds(facts) == ["budget_reserved"] and tenant(state) == (0, 0)  # a late copy holds nothing


def test_a_reservation_never_closed_lapses_at_expires_at():
    state, _ = run([cmd("reserve", "r1/s/1", 5 * USD), cmd("spend", "r1/s/1", USD)])
    assert next_due(state) == T0 + 60_000
    same, facts = expire(state, T0 + 59_999)
    assert facts == [] and tenant(same) == (USD, 4 * USD)
    after, facts = expire(state, T0 + 60_000)
    assert kinds(facts) == ["budget_released"] and tenant(after) == (USD, 0)
    assert facts[0].budget is not None and facts[0].budget.requested_micros == 4 * USD  # what it freed
    assert facts[0].run_id == "r1" and facts[0].step == "s" and facts[0].budget.reservation_id == "r1/s/1"
    assert tenant(state) == (USD, 4 * USD)  # the input state is untouched
    again, facts = expire(after, T0 + 70_000)
    assert facts == [] and again == after
    late, _ = run([cmd("spend", "r1/s/1", USD, n=1)], state=after)  # a spend after the lapse still counts
    assert tenant(late) == (2 * USD, 0)


def test_forget_drops_the_run_and_step_scopes_and_releases_open_holds():
    state, _ = run(
        [cmd("reserve", "r1/s/1", 2 * USD), cmd("reserve", "r2/s/1", 3 * USD), cmd("spend", "r1/s/1", USD)]
    )
    state, facts = run([cmd("forget", "r1", run_id="r1", reservation_id="")], state=state)
    assert kinds(facts) == ["budget_released"]
    assert not [k for k in state.scopes if "r1" in k] and "r1/s/1" not in state.reservations
    assert tenant(state) == (USD, 3 * USD)  # the day keeps r1's spend; r2 keeps its hold
    assert "run:r2" in state.scopes


def test_a_warning_goes_out_once_per_scope_at_the_threshold():
    state, facts = run([cmd("reserve", "r1/s/1", 7 * USD)])
    assert kinds(facts) == ["budget_reserved"]
    state, facts = run([cmd("reserve", "r2/s/1", USD)], state=state)
    assert kinds(facts) == ["budget_reserved", "budget_warning"]
    assert facts[1].budget is not None and facts[1].budget.scope == "tenant:2026-11-30"
    assert facts[1].run_id == "r2"
    state, facts = run([cmd("spend", "r2/s/1", USD), cmd("reserve", "r3/s/1", USD)], state=state)
    assert "budget_warning" not in kinds(facts)


def test_the_day_is_the_utc_day_of_issue_and_old_days_leave():
    late = T0 + 11 * 3600 * 1000 + 59 * 60 * 1000  # 23:59 UTC
    state, _ = run(
        [
            cmd("reserve", "r1/s/1", 9 * USD, at=late),
            cmd("spend", "r1/s/1", 9 * USD, at=late),
            cmd("close", "r1/s/1", at=late),
        ],
        now=late,
    )
    # Past midnight the tenant has a new day, with its whole limit.
    state, facts = run(
        [cmd("reserve", "r2/s/1", 9 * USD, at=late + 120_000)], now=late + 120_000, state=state
    )
    assert kinds(facts) == ["budget_reserved", "budget_warning"]  # the new day's own warning
    assert tenant(state, "2026-12-01") == (0, 9 * USD)
    assert tenant(state) == (9 * USD, 0)
    state, _ = expire(state, T0 + 2 * DAY_MS)
    assert "tenant:2026-11-30" in state.scopes
    state, _ = expire(state, T0 + 3 * DAY_MS)
    assert "tenant:2026-11-30" not in state.scopes and "tenant:2026-12-01" in state.scopes


def test_event_ids_are_deterministic_so_a_replay_yields_the_same_ids():
    commands = [
        cmd("reserve", "r1/s/1", 6 * USD),
        cmd("reserve", "r2/s/1", 6 * USD),
        cmd("reserve", "r3/s/1", 3 * USD),
    ]
    _, first = run(commands)
    _, again = run(commands, now=T0 + 5)
    assert [f.event_id for f in first] == [f.event_id for f in again]
    assert len({f.event_id for f in first}) == len(first)


@pytest.mark.parametrize(
    "bad",
    [
        {"action": "refund"},
        {"amount_micros": -1},
        {"reservation_id": ""},
        {"run_limit_micros": -5},
    ],
)
def test_malformed_commands_are_refused_with_a_reason(bad):
    with pytest.raises(Invalid):
        decide(None, replace(cmd("reserve", "r1/s/1", USD), **bad), T0, LIMITS)


def test_a_command_of_another_tenant_never_touches_this_tenant_s_state():
    state, _ = run([cmd("reserve", "r1/s/1", USD)])
    with pytest.raises(Invalid, match="tenant"):
        decide(state, cmd("reserve", "r2/s/1", USD, tenant_id="globex"), T0, LIMITS)


def test_the_state_round_trips_through_its_json_form():
    state, _ = run([cmd("reserve", "r1/s/1", 5 * USD), cmd("spend", "r1/s/1", USD)])
    assert TenantBudgets.from_json(state.to_json()) == state
