"""The console's costs: spend per day by tenant, agent, workflow or model (the costs projection, through
GET /v1/costs's own query), drawn as an SVG chart, with the day budgets and their use today."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from keel import intake
from keel.budget_limits import Limits
from services.api.apikeys import Principal
from services.api.console import chart
from services.api.console.session import render, who
from services.api.cost_query import BadCostQuery, CostQuery, answer, instant_of, statement, usd_text
from services.api.costs import scope_of
from services.api.deps import CONSOLE_PREFIX, Deps, deps_of
from services.api.errors import ApiError
from services.api.pool import EVERY_TENANT

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
GROUPS = ("tenant", "agent", "workflow", "model")
NONE = "(none)"  # a fact with no agent (a tool call outside an agent step), say


def _read(deps: Deps, q: CostQuery) -> dict[str, Any]:
    query, params = statement(deps.api.projection_schema, q)
    with deps.pool.connection(q.tenant or EVERY_TENANT) as conn:
        return answer(q, conn.execute(query, params).fetchall())


def _days(start: datetime, end: datetime) -> list[str]:
    days, day = [], start.date()
    while day < end.date() or (day == end.date() and end.time() != datetime.min.time()):
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def budgets(deps: Deps, found: Principal, scope: str | None, now: datetime) -> list[dict[str, Any]]:
    """Each day budget that applies to what was spent today (and each tenant named in the limits), with
    today's spend against it; none when no limits are configured here."""
    try:
        limits = Limits.from_json(deps.api.budget_limits)
    except ValueError as exc:
        return [
            {"scope": "configuration", "name": str(exc), "tenant": "", "limit": "", "spent": "", "use": 0}
        ]
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    spent = _read(deps, CostQuery(("tenant", "agent", "workflow"), scope, today, today + timedelta(days=1)))
    sums: dict[tuple[str, str, str], int] = {}
    tenants = {t for t in limits.tenant_day if t != "*" and (scope is None or t == scope)}
    for row in spent["rows"]:
        tenant = row["tenant"]
        tenants.add(tenant)
        for kind in ("agent", "workflow"):
            if row[kind] is not None:
                key = (kind, tenant, row[kind])
                sums[key] = sums.get(key, 0) + row["cost_micros"]
        sums[("tenant", tenant, tenant)] = sums.get(("tenant", tenant, tenant), 0) + row["cost_micros"]
    found_limits: list[tuple[str, str, str, int | None]] = [
        ("tenant", t, t, limits.tenant_day_limit(t)) for t in sorted(tenants)
    ]
    for kind, tenant, name in sorted(k for k in sums if k[0] != "tenant"):
        check = limits.agent_day_limit if kind == "agent" else limits.workflow_day_limit
        found_limits.append((kind, tenant, name, check(tenant, name)))
    out = []
    for kind, tenant, name, limit in found_limits:
        if limit is None:
            continue
        used = sums.get((kind, tenant, name), 0)
        out.append(
            {
                "scope": f"{kind} per day",
                "name": name,
                "tenant": tenant,
                "limit": usd_text(limit),
                "spent": usd_text(used),
                "use": min(100, round(100 * used / limit)) if limit else 100,
            }
        )
    return out


@router.get("/costs", response_class=HTMLResponse)
def costs_page(
    request: Request,
    group: Annotated[str, Query(pattern="^(" + "|".join(GROUPS) + ")$")] = "tenant",
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    tenant: Annotated[str | None, Query(pattern=f"({intake.TENANT_PATTERN})|^$")] = None,
) -> HTMLResponse:
    found, deps = who(request), deps_of(request)
    scope = scope_of(found, tenant or None)
    now = datetime.now(UTC)
    try:
        end = instant_of("until", until) or datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(1)
        start = instant_of("since", since) or end - timedelta(days=14)
    except BadCostQuery as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None
    if not start < end or end - start > timedelta(days=366):
        raise ApiError(400, "invalid_query", "since must come before until, at most a year apart")
    by_day = _read(deps, CostQuery(("day", group), scope, start, end))
    spend: dict[str, dict[str, int]] = {}
    for row in by_day["rows"]:
        name = row[group] if row[group] is not None else NONE
        spend.setdefault(name, {})[row["day"]] = row["cost_micros"]
    totals = _read(deps, CostQuery((group,), scope, start, end))
    return render(
        request, "costs.html", who=found, group=group, groups=GROUPS, tenant=tenant or "",
        since=start.isoformat(), until=end.isoformat(), chart=chart.stacked(_days(start, end), spend),
        totals=totals, budgets=budgets(deps, found, scope, now), unnamed=NONE,
    )  # fmt: skip
