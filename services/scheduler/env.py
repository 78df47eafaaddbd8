"""What the scheduler's pure core is given besides the run: tool definitions and the budget policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keel.routing import RouteConfig
from keel.tooldefs import ToolDefinition
from services.scheduler.budgets import BudgetPolicy

# name@version -> the tool's definition; raises LookupError for a tool nobody defined.
ToolLookup = Callable[[str], ToolDefinition]


@dataclass(frozen=True)
class Env:
    tools: ToolLookup | None = None  # agent steps' tools; paid tools' fees
    budgets: BudgetPolicy | None = None  # None: no reservations (docs/budgets.md)
    routes: RouteConfig | None = None  # the models a model call may end up on (its worst case covers all)

    def fee_of(self, tool: str | None) -> float | None:
        """A tool's declared fee per call, if the tool is known and charges one."""
        if tool is None or self.tools is None:
            return None
        try:
            return self.tools(tool).fee_usd
        except LookupError:
            return None
