"""The enforcer's guarantee over random interleavings (seeded): with spends within their reservation,
closes, lapses and forgets in any order, spent + reserved never passes a limit in any scope, holds are
exactly the open reservations' holds, and spent is exactly the sum of the spends."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from test_budget_core import T0, USD, cmd

from keel.budget_limits import Limits
from services.budget.core import decide, expire
from services.budget.state import TenantBudgets

LIMITS = Limits.from_json(
    '{"tenant_day_usd": {"*": 20.0}, "agent_day_usd": {"a1": 8.0}, "workflow_day_usd": {"w2": 12.0}}'
)


def check(state: TenantBudgets, spent_by_scope: dict[str, int]) -> None:
    held: dict[str, int] = defaultdict(int)
    for r in state.reservations.values():
        assert 0 <= r.held <= r.amount
        if not r.closed:
            for key in r.scopes:
                held[key] += r.held
        else:
            assert r.held == 0
    for key, scope in state.scopes.items():
        assert scope.reserved == held[key], f"{key}: holds drifted from the open reservations"
        assert scope.spent == spent_by_scope[key], f"{key}: spent drifted from the sum of the spends"
        if scope.limit is not None:
            assert scope.spent + scope.reserved <= scope.limit, f"{key} passed its limit"


def run_of(key: str) -> str | None:
    """The run of a run or step scope key (run:R, step:R/S); None for a day scope."""
    kind, _, rest = key.partition(":")
    return rest.split("/")[0] if kind in ("run", "step") else None


@pytest.mark.parametrize("seed", range(300))
def test_no_interleaving_passes_a_limit_or_loses_a_hold(seed: int) -> None:
    rng = random.Random(seed)
    state: TenantBudgets | None = None
    now, n = T0, 0
    runs = [f"run{i}" for i in range(5)]
    spent_by_scope: dict[str, int] = defaultdict(int)
    open_units: dict[str, int] = {}  # reservation id -> what it may still spend
    granted = 0
    answers: list = []
    for _ in range(80):
        now += rng.randint(0, 4000)
        n += 1
        op = rng.random()
        at = datetime.fromtimestamp(now / 1000, UTC)
        if op < 0.45 or not open_units:
            run = rng.choice(runs)
            rid = f"{run}/s{rng.randint(0, 2)}/{n}"
            c = cmd(
                "reserve",
                rid,
                rng.randint(0, 6) * USD // 2,
                at=now,
                n=n,
                agent_id=rng.choice(["a1", "a2", None]),
                workflow=rng.choice(["w1", "w2"]),
                run_limit_micros=rng.choice([None, 6 * USD, 9 * USD]),
                step_limit_micros=rng.choice([None, 4 * USD]),
                expires_at=datetime.fromtimestamp((now + rng.randint(1000, 20_000)) / 1000, UTC),
            )
            state, facts = decide(state, c, now, LIMITS)
            answers += facts
            if facts[0].event == "budget_reserved":
                granted += 1
                open_units[rid] = c.amount_micros
        elif op < 0.75:
            rid = rng.choice(sorted(open_units))
            amount = rng.randint(0, open_units[rid])
            r = state.reservations.get(rid) if state else None
            if r is None or r.closed:  # lapsed or forgotten: the unit can no longer spend
                open_units.pop(rid)
                continue
            open_units[rid] -= amount
            state, _ = decide(state, cmd("spend", rid, amount, at=now, n=n), now, LIMITS)
            for key in r.scopes:
                spent_by_scope[key] += amount
        elif op < 0.9:
            rid = rng.choice(sorted(open_units))
            open_units.pop(rid)
            state, _ = decide(state, cmd("close", rid, at=now, n=n), now, LIMITS)
        elif op < 0.95 and state is not None:
            state, facts = expire(state, now)
            answers += facts
        elif state is not None:
            run = rng.choice(runs)
            state, _ = decide(
                state, cmd("forget", run, run_id=run, reservation_id="", issued_at=at, n=n), now, LIMITS
            )
            open_units = {k: v for k, v in open_units.items() if not k.startswith(f"{run}/")}
            spent_by_scope = defaultdict(int, {k: v for k, v in spent_by_scope.items() if run_of(k) != run})
        if state is not None:
            check(state, spent_by_scope)
    assert granted > 0
    seen.update(f.event for f in answers)


seen: set[str] = set()


def test_the_random_sequences_reach_every_answer() -> None:
    """Runs after the sequences above: they granted, deferred, refused and released."""
    assert seen >= {
        "budget_reserved",
        "budget_deferred",
        "budget_exceeded",
        "budget_released",
        "budget_warning",
    }
