"""The scheduler's own configuration: which topics it reads and writes, and how long it keeps ended runs."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from keel.settings import Settings
from keel.topics import (
    BUDGET_COMMANDS,
    CONTROL,
    DEFINITIONS,
    RUN_EVENTS,
    RUN_REQUESTS,
    SCHEDULER_STATE,
    STEP_COMMANDS,
)
from services.scheduler.budgets import BudgetPolicy
from services.scheduler.fair import FairPolicy, parse_limits


@dataclass(frozen=True)
class SchedulerTopics:
    """The scheduler's topics; tests give it their own, unique ones."""

    requests: str = RUN_REQUESTS
    events: str = RUN_EVENTS
    control: str = CONTROL
    commands: str = STEP_COMMANDS
    state: str = SCHEDULER_STATE
    definitions: str = DEFINITIONS  # read in the background, not consumed by the loop
    budget: str = BUDGET_COMMANDS  # reservations, spends and closes for the budget enforcer

    def inputs(self) -> list[str]:
        return [self.requests, self.events, self.control]


class SchedulerSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    # retention_horizon_s (shared): an ended run is kept as a small marker for this long, so a repeated
    # run_id stays a no-op; then it leaves memory and the changelog. A run request older than this is
    # refused (dead-lettered): once the marker is gone nothing could tell it apart from a new run.

    def tool_call_bound_ms(self) -> int:
        """The longest a lost tool attempt may still be mid-call after its deadline (connect, write and
        read phases each get the shared tool timeout): its retry waits this long."""
        return int(3 * self.tool_timeout_s * 1000) + 1000

    # Budgets (docs/budgets.md): paid attempts reserve their worst case with the budget enforcer first.
    # Off only where no enforcer runs (it is the only way spend is stopped before it happens).
    budgets: bool = True
    # How long an attempt may wait, in all, for other runs' reservations to free room before its run is
    # hard-stopped.
    budget_max_wait_s: float = Field(default=120.0, gt=0)

    def budget_policy(self) -> BudgetPolicy | None:
        if not self.budgets:
            return None
        return BudgetPolicy(max_wait_ms=int(self.budget_max_wait_s * 1000))

    # Tombstones written per transaction at most, so expiring a backlog of markers never makes a huge one.
    retention_batch: int = Field(default=2000, ge=1)

    # Fair dispatch (docs/tenancy.md section 6): attempts in flight per tenant on one scheduler instance at
    # most (0: no limit); beyond it a tenant's ready attempts wait in its queue. High enough by default that
    # only a burst is held (a tenant's ceiling over the cluster is this times the instances).
    tenant_max_inflight: int = Field(default=200, ge=0)
    # Per-tenant overrides, JSON: {"<tenant>": {"max_inflight": n (0: no limit), "weight": w}}; a weight
    # scales the default limit and the tenant's turns when several tenants' attempts are released at once.
    tenant_limits: str = ""

    def fair_policy(self) -> FairPolicy:
        """Raises ValueError, naming the variable, on a limit it cannot read: the scheduler does not start."""
        return parse_limits(self.tenant_max_inflight, self.tenant_limits)
