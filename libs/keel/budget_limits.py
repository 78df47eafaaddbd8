"""Day budget limits from configuration (KEEL_BUDGET_LIMITS), in integer micro-dollars: the budget
enforcer enforces them, the API's console shows their use. Pure: no I/O.

The JSON form (USD):

    {"tenant_day_usd": {"*": 50.0, "acme": 10.0},
     "agent_day_usd": {"support_triage_v1": 5.0},
     "workflow_day_usd": {"support_triage": 20.0},
     "tenants": {"acme": {"agent_day_usd": {"support_triage_v1": 2.0}, "workflow_day_usd": {}}}}

`tenant_day_usd`: per tenant, "*" the default of every tenant not named. `agent_day_usd` and
`workflow_day_usd`: per agent (workflow), for every tenant, "*" a default for every agent (workflow);
`tenants.T` overrides them for tenant T (an entry there wins over the global one for the same name).
A tenant, agent or workflow with no entry and no "*" has no limit at that scope.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

MICROS = 1_000_000
_KNOWN = {"tenant_day_usd", "agent_day_usd", "workflow_day_usd", "tenants"}


def usd_to_micros(usd: float) -> int:
    return int(round(usd * MICROS))


def micros_to_usd(micros: int) -> float:
    return micros / MICROS


@dataclass(frozen=True)
class Limits:
    tenant_day: dict[str, int] = field(default_factory=dict)
    agent_day: dict[str, int] = field(default_factory=dict)
    workflow_day: dict[str, int] = field(default_factory=dict)
    tenants: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # tenant -> kind -> name
    warn_permille: int = 800  # budget_warning when spent + reserved reaches this share of a limit
    default_hold_ms: int = 15 * 60 * 1000  # a reserve with no expires_at lapses this long after issue

    def tenant_day_limit(self, tenant: str) -> int | None:
        return self.tenant_day.get(tenant, self.tenant_day.get("*"))

    def agent_day_limit(self, tenant: str, agent: str) -> int | None:
        return _named(self.tenants.get(tenant, {}).get("agent_day", {}), self.agent_day, agent)

    def workflow_day_limit(self, tenant: str, workflow: str) -> int | None:
        return _named(self.tenants.get(tenant, {}).get("workflow_day", {}), self.workflow_day, workflow)

    @classmethod
    def from_json(cls, text: str | None, warn_at: float = 0.8, default_hold_ms: int = 900_000) -> Limits:
        raw: dict[str, Any] = json.loads(text) if text and text.strip() else {}
        if not isinstance(raw, dict) or set(raw) - _KNOWN:
            raise ValueError(f"KEEL_BUDGET_LIMITS: an object with keys among {sorted(_KNOWN)}")
        if not 0 < warn_at <= 1:
            raise ValueError("KEEL_BUDGET_WARN_AT must be in (0, 1]")
        tenants = raw.get("tenants", {})
        if not isinstance(tenants, dict):
            raise ValueError("KEEL_BUDGET_LIMITS.tenants: an object per tenant")
        per_tenant: dict[str, dict[str, dict[str, int]]] = {}
        for tenant, over in tenants.items():
            if not isinstance(over, dict) or set(over) - {
                "agent_day_usd",
                "workflow_day_usd",
                "tenant_day_usd",
            }:
                raise ValueError(f"KEEL_BUDGET_LIMITS.tenants.{tenant}: agent_day_usd, workflow_day_usd")
            per_tenant[tenant] = {
                "agent_day": _table(over.get("agent_day_usd", {}), f"tenants.{tenant}.agent_day_usd"),
                "workflow_day": _table(
                    over.get("workflow_day_usd", {}), f"tenants.{tenant}.workflow_day_usd"
                ),
            }
        tenant_day = _table(raw.get("tenant_day_usd", {}), "tenant_day_usd")
        for tenant, over in tenants.items():  # a tenant's own tenant_day_usd, the same as naming it above
            if "tenant_day_usd" in over:
                tenant_day[tenant] = _amount(over["tenant_day_usd"], f"tenants.{tenant}.tenant_day_usd")
        return cls(
            tenant_day=tenant_day,
            agent_day=_table(raw.get("agent_day_usd", {}), "agent_day_usd"),
            workflow_day=_table(raw.get("workflow_day_usd", {}), "workflow_day_usd"),
            tenants=per_tenant,
            warn_permille=int(round(warn_at * 1000)),
            default_hold_ms=default_hold_ms,
        )


def _named(own: dict[str, int], shared: dict[str, int], name: str) -> int | None:
    for table in (own, shared):
        if name in table:
            return table[name]
    for table in (own, shared):
        if "*" in table:
            return table["*"]
    return None


def _amount(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"KEEL_BUDGET_LIMITS.{where}: a finite amount of USD, not below 0")
    return usd_to_micros(float(value))


def _table(raw: Any, where: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ValueError(f"KEEL_BUDGET_LIMITS.{where}: an object of name -> USD")
    return {str(k): _amount(v, f"{where}.{k}") for k, v in raw.items()}
