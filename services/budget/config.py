"""The budget enforcer's configuration: its topics, the day limits and the warning threshold."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from keel.budget_limits import Limits
from keel.settings import Settings
from keel.topics import BUDGET_COMMANDS, BUDGET_STATE, RUN_EVENTS


@dataclass(frozen=True)
class BudgetTopics:
    """The enforcer's topics; tests give it their own, unique ones."""

    commands: str = BUDGET_COMMANDS
    events: str = RUN_EVENTS
    state: str = BUDGET_STATE


class BudgetSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    # Day limits per tenant, agent and workflow, as JSON in USD (the format: keel.budget_limits).
    budget_limits: str | None = None
    # budget_warning once per scope when spent + reserved reaches this share of its limit.
    budget_warn_at: float = Field(default=0.8, gt=0, le=1)
    # A reserve that names no expires_at lapses this long after it was issued.
    budget_default_hold_s: float = Field(default=900.0, gt=0)
    # Tenants whose lapsed reservations a tick releases at most (the rest on the next turns), so a
    # backlog of lapses never makes one huge transaction.
    budget_expire_batch: int = Field(default=200, ge=1)

    def limits(self) -> Limits:
        """The parsed limits: a malformed KEEL_BUDGET_LIMITS fails the start, loudly."""
        return Limits.from_json(
            self.budget_limits, self.budget_warn_at, int(self.budget_default_hold_s * 1000)
        )
