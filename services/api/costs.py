"""GET /v1/costs: what was spent, grouped as asked, from the costs projection in one SQL query.

A tenant's principal (viewer and above) sees its own costs only (naming another tenant is 403); an
operator's sees every tenant's, or one tenant's with `tenant=`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from keel import intake
from services.api import docs
from services.api.apikeys import Principal
from services.api.cost_query import (
    GROUP_COLUMNS,
    GROUP_PATTERN,
    BadCostQuery,
    CostQuery,
    answer,
    group_by_of,
    instant_of,
    statement,
)
from services.api.deps import Reader, deps_of
from services.api.errors import ApiError
from services.api.pool import EVERY_TENANT

router = APIRouter()
GROUP_HELP = "comma-separated, any of: " + ", ".join(GROUP_COLUMNS) + " (none: the total only)"
FROM_HELP = "ISO date or date-time (UTC unless it names a zone), included"
TO_HELP = "ISO date or date-time (UTC unless it names a zone), excluded"
# Documented, not enforced by the framework: the handler refuses anything else with a message that names
# the unknown column or the bad time.
GROUPS: dict[str, Any] = {"pattern": GROUP_PATTERN}
AT: dict[str, Any] = {"format": "date-time"}
GroupBy = Annotated[str | None, Query(max_length=200, description=GROUP_HELP, json_schema_extra=GROUPS)]
From = Annotated[str | None, Query(alias="from", max_length=40, description=FROM_HELP, json_schema_extra=AT)]
To = Annotated[str | None, Query(alias="to", max_length=40, description=TO_HELP, json_schema_extra=AT)]


def scope_of(who: Principal, tenant: str | None) -> str | None:
    """The tenant the answer is about; None for every tenant (an operator who named none)."""
    if who.tenant is not None:
        if tenant is not None and tenant != who.tenant:
            raise ApiError(403, "forbidden", "a tenant's key reads its own costs only")
        return who.tenant
    return tenant


class CostAmount(BaseModel):
    cost_micros: int  # the exact sum, in integer micro-dollars
    cost_usd: str  # the same in USD, as exact decimal text with six places
    facts: int  # how many cost facts it sums


class CostGroup(CostAmount):
    """One group: its group_by columns (by their API names, null where the facts had none), then its sums."""

    model_config = ConfigDict(extra="allow")


class Costs(BaseModel):
    group_by: list[str]
    tenant: str | None  # null: every tenant (an operator who named none)
    from_: str | None = Field(alias="from")
    to: str | None
    rows: list[CostGroup]
    total: CostAmount


@router.get(
    "/v1/costs", response_model=None, responses={**docs.ok(Costs), **docs.errors(400, 401, 403, 422, 503)}
)
async def costs(
    request: Request,
    who: Reader,
    group_by: GroupBy = "tenant",
    start: From = None,
    end: To = None,
    tenant: Annotated[str | None, Query(pattern=intake.TENANT_PATTERN)] = None,
) -> dict[str, Any]:
    """Sums of cost_micros (exact integers) per group and in total, with USD as exact decimal text."""
    scope = scope_of(who, tenant)
    try:
        since = instant_of("from", start, empty_is_none=False)  # documented as a date-time: '' is malformed
        until = instant_of("to", end, empty_is_none=False)
        q = CostQuery(group_by_of(group_by), scope, since, until)
    except BadCostQuery as exc:
        raise ApiError(422, "invalid_query", str(exc)) from None
    deps = deps_of(request)

    def read() -> list[dict[str, Any]]:
        query, params = statement(deps.api.projection_schema, q)
        with deps.pool.connection(q.tenant or EVERY_TENANT) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()

    return answer(q, await run_in_threadpool(read))
