"""The budget enforcer's pure core: reserve, spend, close and forget against a tenant's scopes.

`decide(state, command, now_ms, limits) -> (state, facts)` and `expire(state, now_ms) -> (state, facts)`
never change the state they are given. The guarantee they keep: in every scope with a limit,
spent + reserved never passes the limit through a reserve (a hold is granted only where it fits
everywhere), and spends within their reservation and closes only move held money to spent or free it.
See docs/budgets.md for the protocol.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from keel.budget_limits import Limits
from keel.contracts import BudgetCommand, RunEvent
from services.budget import answers as a
from services.budget.state import At, Reservation, Scope, TenantBudgets

RESERVE, SPEND, CLOSE, FORGET = "reserve", "spend", "close", "forget"
ACTIONS = frozenset({RESERVE, SPEND, CLOSE, FORGET})
DAY_MS = 24 * 3600 * 1000
KEEP_DAYS = 2  # a day scope (and a lapsed reservation's marker) stays this many days after its day
RETRY_MIN_MS, RETRY_MAX_MS = 200, 5000


class Invalid(ValueError):
    """A command the enforcer must not act on (the shell dead-letters it with the reason)."""


def decide(
    state: TenantBudgets | None, cmd: BudgetCommand, now_ms: int, limits: Limits
) -> tuple[TenantBudgets, list[RunEvent]]:
    _check(state, cmd)
    st = state.copy() if state is not None else TenantBudgets(tenant_id=cmd.tenant_id)
    _drop_old_days(st, now_ms)
    touched: list[str] = []  # the scopes whose spent + reserved grew: the only ones to warn about
    if cmd.action == RESERVE:
        facts, touched = _reserve(st, cmd, now_ms, limits)
    elif cmd.action == SPEND:
        facts, touched = [], _spend(st, cmd, limits)
    elif cmd.action == CLOSE:
        facts = _close(st, cmd)
    else:
        facts = _forget(st, cmd, now_ms)
    facts += _warnings(st, touched, a.at_of(cmd), cmd.reservation_id, now_ms, limits)
    return st, facts


def expire(state: TenantBudgets, now_ms: int) -> tuple[TenantBudgets, list[RunEvent]]:
    """Release reservations past their expires_at (`budget_released`), drop markers and day scopes
    that have aged out."""
    st = state.copy()
    _drop_old_days(st, now_ms)
    facts = []
    for rid, r in list(st.reservations.items()):
        if not r.closed and r.expires_at <= now_ms:
            facts.append(_released(st, rid, r, now_ms, "lapsed", "no close came before expires_at"))
        elif r.closed and r.expires_at + KEEP_DAYS * DAY_MS <= now_ms:
            del st.reservations[rid]
    return st, facts


def next_due(state: TenantBudgets) -> int | None:
    """When `expire` next has something to do for this tenant (ms since epoch), if ever."""
    times = [r.expires_at + (KEEP_DAYS * DAY_MS if r.closed else 0) for r in state.reservations.values()]
    times += [_day_start_ms(s.day) + (KEEP_DAYS + 1) * DAY_MS for s in state.scopes.values() if s.day]
    return min(times, default=None)


# -- the actions ------------------------------------------------------------------------------------
def _reserve(
    st: TenantBudgets, cmd: BudgetCommand, now_ms: int, limits: Limits
) -> tuple[list[RunEvent], list[str]]:
    rid, amount = cmd.reservation_id, cmd.amount_micros
    held = st.reservations.get(rid)
    if held is not None:  # repeated: answered again (the same event id), never held twice
        return [_granted(st, held.at, rid, held.scopes, held.amount, now_ms)], []
    wanted = _scopes_of(st, cmd, limits)
    for key, scope in wanted.items():
        if scope.limit is not None and scope.spent + amount > scope.limit:
            return [_answer(st, cmd, a.EXCEEDED, key, scope, now_ms)], []
    for key, scope in wanted.items():
        if scope.limit is not None and scope.spent + scope.reserved + amount > scope.limit:
            wait = _retry_after(st, key, now_ms)
            return [_answer(st, cmd, a.DEFERRED, key, scope, now_ms, wait)], []
    for key, scope in wanted.items():
        scope.reserved += amount
        st.scopes[key] = scope
    issued = _ms(cmd.issued_at)
    expires = _ms(cmd.expires_at) if cmd.expires_at is not None else issued + limits.default_hold_ms
    st.reservations[rid] = Reservation(amount, amount, list(wanted), expires, a.at_of(cmd))
    return [_granted(st, a.at_of(cmd), rid, list(wanted), amount, now_ms)], list(wanted)


def _granted(st: TenantBudgets, at: At, rid: str, keys: list[str], amount: int, now_ms: int) -> RunEvent:
    key = _tightest(st, keys)
    budget = a.detail(key, st.scopes.get(key, Scope()), rid, amount)
    return a.fact(st.tenant_id, at, a.RESERVED, budget, now_ms, rid)


def _spend(st: TenantBudgets, cmd: BudgetCommand, limits: Limits) -> list[str]:
    r = st.reservations.get(cmd.reservation_id)
    if r is not None and cmd.command_id in r.spends:
        return []  # the same spend again: counted once
    if r is not None:
        keys = r.scopes
        for key in keys:  # a scope aged out (or forgotten) meanwhile starts again from this spend
            st.scopes.setdefault(key, _fresh_scope(key, cmd))
    else:  # no reservation (it lapsed and left, or never was): the cost is counted all the same, in
        # the day scopes, and in the run's scopes while they exist (a forgotten run's are not revived:
        # nothing would ever remove them again)
        computed = _scopes_of(st, cmd, limits)
        keys = [k for k, s in computed.items() if s.run is None or k in st.scopes]
        st.scopes.update({k: computed[k] for k in keys})
    for key in keys:
        st.scopes[key].spent += cmd.amount_micros
    if r is not None:
        _unhold(st, r, min(cmd.amount_micros, r.held))
        r.spends.append(cmd.command_id)
    return keys


def _close(st: TenantBudgets, cmd: BudgetCommand) -> list[RunEvent]:
    r = st.reservations.get(cmd.reservation_id)
    if r is not None and not r.closed:
        _unhold(st, r, r.held)
        r.closed = True
    return []


def _forget(st: TenantBudgets, cmd: BudgetCommand, now_ms: int) -> list[RunEvent]:
    facts = []
    for rid, r in list(st.reservations.items()):
        if r.at.run_id != cmd.run_id:
            continue
        if not r.closed:
            facts.append(
                _released(st, rid, r, now_ms, "forgotten", "the run ended with this reservation open")
            )
        del st.reservations[rid]
    st.scopes = {k: s for k, s in st.scopes.items() if s.run != cmd.run_id}
    return facts


# -- helpers ------------------------------------------------------------------------------------------
def _check(state: TenantBudgets | None, cmd: BudgetCommand) -> None:
    if cmd.action not in ACTIONS:
        raise Invalid(f"unknown action {cmd.action!r} (known: {', '.join(sorted(ACTIONS))})")
    if not cmd.tenant_id or not cmd.run_id or not cmd.command_id:
        raise Invalid("a budget command needs tenant_id, run_id and command_id")
    if cmd.action != FORGET and not cmd.reservation_id:
        raise Invalid(f"{cmd.action} needs a reservation_id")
    if cmd.amount_micros < 0:
        raise Invalid(f"amount_micros {cmd.amount_micros} is negative")
    for name in ("run_limit_micros", "step_limit_micros"):
        if (getattr(cmd, name) or 0) < 0:
            raise Invalid(f"{name} is negative")
    if state is not None and state.tenant_id != cmd.tenant_id:
        raise Invalid(f"a command of tenant {cmd.tenant_id!r} for the state of {state.tenant_id!r}")


def _scopes_of(st: TenantBudgets, cmd: BudgetCommand, limits: Limits) -> dict[str, Scope]:
    """The unit's scopes (copies, with their limits as of now), in the order they are judged."""
    day = _day(cmd.issued_at)
    wanted: dict[str, tuple[int | None, bool]] = {f"run:{cmd.run_id}": (cmd.run_limit_micros, True)}
    if cmd.step:
        wanted[f"step:{cmd.run_id}/{cmd.step}"] = (cmd.step_limit_micros, True)
    if cmd.agent_id:
        wanted[f"agent:{cmd.agent_id}:{day}"] = (limits.agent_day_limit(cmd.tenant_id, cmd.agent_id), False)
    wanted[f"workflow:{cmd.workflow}:{day}"] = (limits.workflow_day_limit(cmd.tenant_id, cmd.workflow), False)
    wanted[f"tenant:{day}"] = (limits.tenant_day_limit(cmd.tenant_id), False)
    out = {}
    for key, (limit, lower_only) in wanted.items():
        have = st.scopes.get(key)
        scope = Scope(**vars(have)) if have is not None else _fresh_scope(key, cmd)
        if lower_only:  # a run's and a step's limits can be lowered by a later command, never raised
            if limit is not None:
                scope.limit = limit if scope.limit is None else min(scope.limit, limit)
        else:  # day limits are the configuration's, as it stands now
            scope.limit = limit
        out[key] = scope
    return out


def _fresh_scope(key: str, cmd: BudgetCommand) -> Scope:
    if key.startswith(("run:", "step:")):
        return Scope(run=cmd.run_id)
    return Scope(day=key.rsplit(":", 1)[1])  # agent:A:DAY, workflow:W:DAY, tenant:DAY


def _unhold(st: TenantBudgets, r: Reservation, amount: int) -> None:
    r.held -= amount
    for key in r.scopes:
        scope = st.scopes.get(key)  # a day scope aged out, or a run's scopes forgotten: nothing held there
        if scope is not None:
            scope.reserved -= amount


def _released(st: TenantBudgets, rid: str, r: Reservation, now_ms: int, why: str, error: str) -> RunEvent:
    freed = r.held
    _unhold(st, r, freed)
    r.closed = True
    keys = [k for k in r.scopes if k in st.scopes] or [f"run:{r.at.run_id}"]
    key = _tightest(st, keys)
    scope = st.scopes.get(key, Scope())
    return a.fact(
        st.tenant_id, r.at, a.RELEASED, a.detail(key, scope, rid, freed), now_ms, f"{rid}:{why}", error
    )


def _answer(
    st: TenantBudgets,
    cmd: BudgetCommand,
    kind: str,
    key: str,
    scope: Scope,
    now_ms: int,
    wait: int | None = None,
) -> RunEvent:
    budget = a.detail(key, scope, cmd.reservation_id, cmd.amount_micros, wait)
    return a.fact(st.tenant_id, a.at_of(cmd), kind, budget, now_ms, cmd.command_id)


def _retry_after(st: TenantBudgets, key: str, now_ms: int) -> int:
    """Until the earliest lapse of the holds in the way (a close may come sooner), within bounds."""
    lapses = [r.expires_at for r in st.reservations.values() if not r.closed and r.held and key in r.scopes]
    wait = min(lapses, default=now_ms + RETRY_MAX_MS) - now_ms
    return max(RETRY_MIN_MS, min(RETRY_MAX_MS, wait))


def _tightest(st: TenantBudgets, keys: list[str]) -> str:
    """The scope with the least room left (the one to show), the first scope when none has a limit."""
    limited = [k for k in keys if k in st.scopes and st.scopes[k].limit is not None]
    if not limited:
        return keys[0]
    return min(limited, key=lambda k: (st.scopes[k].limit or 0) - st.scopes[k].spent - st.scopes[k].reserved)


def _warnings(
    st: TenantBudgets, keys: list[str], at: At, rid: str, now_ms: int, limits: Limits
) -> list[RunEvent]:
    facts = []
    for key in keys:
        scope = st.scopes[key]
        if scope.warned or scope.limit is None or scope.limit <= 0:
            continue
        if (scope.spent + scope.reserved) * 1000 >= scope.limit * limits.warn_permille:
            scope.warned = True
            facts.append(a.fact(st.tenant_id, at, a.WARNING, a.detail(key, scope, rid), now_ms, key))
    return facts


def _drop_old_days(st: TenantBudgets, now_ms: int) -> None:
    oldest = (_date(now_ms) - timedelta(days=KEEP_DAYS)).isoformat()
    st.scopes = {k: s for k, s in st.scopes.items() if s.day is None or s.day >= oldest}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def _date(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _day_start_ms(day: str) -> int:
    return _ms(datetime.fromisoformat(day).replace(tzinfo=UTC))
