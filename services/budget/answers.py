"""The enforcer's facts on keel.run-events: one shape for every budget answer. Pure.

Every fact is keyed by its run, from source "budget", with the unit's coordinates and a BudgetDetail
whose `scope` is the scope's key (`run:R`, `step:R/S`, `agent:A:DAY`, `workflow:W:DAY`, `tenant:DAY`):
its kind is the part before the first colon. Figures are integer micro-dollars, with USD beside them
for display only. Event ids are deterministic (keel.events.event_id), so a replay yields the same ids.
"""

from __future__ import annotations

from keel import events as ev
from keel.budget_limits import micros_to_usd
from keel.contracts import BudgetCommand, BudgetDetail, RunEvent
from services.budget.state import At, Scope

SOURCE = "budget"
# Event kinds (wire values: never change one).
RESERVED = "budget_reserved"  # the amount is held in every scope of the unit: the call may start
DEFERRED = "budget_deferred"  # only other reservations are in the way: ask again after retry_after_ms
EXCEEDED = ev.BUDGET_EXCEEDED  # the unit's own worst case on top of what is spent passes a limit
WARNING = ev.BUDGET_WARNING  # spent + reserved reached the warning threshold of a scope's limit
RELEASED = "budget_released"  # a reservation's hold was released without a close (lapse or forget)


def at_of(cmd: BudgetCommand) -> At:
    return At(
        run_id=cmd.run_id,
        workflow=cmd.workflow,
        workflow_version=cmd.workflow_version,
        task_id=cmd.task_id,
        step=cmd.step,
        call=cmd.call,
        attempt=cmd.attempt,
        agent_id=cmd.agent_id,
        model=cmd.model,
        trace_id=cmd.trace_id,
    )


def detail(
    key: str,
    scope: Scope,
    reservation_id: str | None,
    requested: int | None = None,
    retry_after_ms: int | None = None,
) -> BudgetDetail:
    """A scope's figures. A scope with no limit reads limit_usd 0.0 and limit_micros null."""
    return BudgetDetail(
        scope=key,
        limit_usd=micros_to_usd(scope.limit or 0),
        spent_usd=micros_to_usd(scope.spent),
        reserved_usd=micros_to_usd(scope.reserved),
        requested_usd=None if requested is None else micros_to_usd(requested),
        limit_micros=scope.limit,
        spent_micros=scope.spent,
        reserved_micros=scope.reserved,
        requested_micros=requested,
        reservation_id=reservation_id,
        retry_after_ms=retry_after_ms,
    )


def fact(
    tenant_id: str,
    at: At,
    kind: str,
    budget: BudgetDetail,
    now_ms: int,
    extra: str,
    error: str | None = None,
) -> RunEvent:
    return RunEvent(
        event_id=ev.event_id(at.run_id, kind, at.step, at.attempt, extra, at.call),
        run_id=at.run_id,
        task_id=at.task_id,
        agent_id=at.agent_id,
        tenant_id=tenant_id,
        workflow=at.workflow,
        workflow_version=at.workflow_version,
        step=at.step,
        call=at.call,
        event=kind,
        ts=ev.at_ms(now_ms),
        attempt=at.attempt,
        model=at.model,
        source=SOURCE,
        trace_id=at.trace_id,
        budget=budget,
        error=error,
    )
