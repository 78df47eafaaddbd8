"""GET /v1/audit: the audit trail (docs/tenancy.md section 5), oldest first, keyset-paged on (at, id).

A tenant's key sees its tenant's rows, an operator's every tenant's (or one: `tenant`) and the rows of
no tenant. The query names the tenant and the row-level security of the connection enforces it again.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg import sql
from pydantic import BaseModel

from services.api import docs, runs
from services.api.apikeys import Principal
from services.api.cost_query import BadCostQuery, instant_of
from services.api.deps import Reader, deps_of
from services.api.errors import ApiError
from services.api.queries import Conn

router = APIRouter()
Text = Annotated[str | None, Query(max_length=256, pattern=r"^[A-Za-z0-9._:@#/|+=-]+$")]
TenantFilter = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
# Documented as date-times, checked by the handler (an ISO date is read as its midnight, UTC).
Instant = Annotated[
    str | None,
    Query(
        max_length=64,
        description="an ISO date or date-time (UTC if no zone)",
        json_schema_extra={"format": "date-time"},
    ),
]
_COLUMNS = "id, at, tenant_id, actor, action, run_id, step, detail, source"


class AuditRow(BaseModel):
    id: str  # the fact's event id, or `command:<command id>`
    at: str
    tenant_id: str | None  # null: an action of no tenant (operators only see these)
    actor: str | None  # the principal (requested_by, issued_by, decided_by) or `service:<name>`
    action: str
    run_id: str | None
    step: str | None
    detail: dict[str, Any]
    source: str  # topic:partition:offset the row was projected from


class AuditPage(BaseModel):
    audit: list[AuditRow]
    next_cursor: str | None


class Filters(BaseModel):
    tenant: str | None
    run_id: str | None
    actor: str | None
    action: str | None
    since: datetime | None
    until: datetime | None


def encode_cursor(at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), row_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(row_id, str) or "\x00" in row_id or len(row_id) > 512:
            raise ValueError("not a row id")
        return datetime.fromisoformat(at), row_id
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(400, "invalid_cursor", "pass the next_cursor of a previous page unchanged") from None


def page(conn: Conn, schema: str, f: Filters, limit: int, cursor: str | None) -> dict[str, Any]:
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    for column, value in (("tenant_id", f.tenant), ("run_id", f.run_id), ("actor", f.actor),
                          ("action", f.action)):  # fmt: skip
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if f.since is not None:
        where.append(sql.SQL("at >= %s"))
        params.append(f.since)
    if f.until is not None:
        where.append(sql.SQL("at < %s"))
        params.append(f.until)
    if cursor is not None:
        where.append(sql.SQL("(at, id) > (%s, %s)"))
        params.extend(decode_cursor(cursor))
    query = sql.SQL(f"SELECT {_COLUMNS} FROM {{}} WHERE {{}} ORDER BY at, id LIMIT %s").format(
        sql.Identifier(schema, "audit"), sql.SQL(" AND ").join(where)
    )
    rows = conn.execute(query, (*params, limit + 1)).fetchall()
    shown, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(shown[-1]["at"], shown[-1]["id"]) if more else None
    return {"audit": [{**r, "at": r["at"].isoformat()} for r in shown], "next_cursor": next_cursor}


def _instant(name: str, text: str | None) -> datetime | None:
    try:
        return instant_of(name, text, empty_is_none=False)
    except BadCostQuery as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None


def _scope(who: Principal, tenant: str | None) -> str | None:
    """The tenant whose rows the answer holds; None for an operator who named none. A tenant naming
    another tenant gets none: the filter names that tenant, and the connection's row-level security
    shows the caller's own rows only (checked like every other request, so a bad parameter is a 400)."""
    if who.operator:
        return tenant
    return tenant if tenant is not None else who.tenant


@router.get("/v1/audit", response_model=None, responses={**docs.ok(AuditPage), **docs.errors(400, 401, 503)})
def audit(
    request: Request,
    who: Reader,
    run_id: Text = None,
    actor: Text = None,
    action: Text = None,
    since: Instant = None,
    until: Instant = None,
    tenant: TenantFilter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    """Who did what: runs submitted, control commands, decisions, and each step's reads and writes."""
    deps = deps_of(request)
    scope = _scope(who, tenant)
    when = _instant("since", since), _instant("until", until)
    with deps.pool.connection(who.sees) as conn:
        if run_id is not None and who.tenant is not None and runs.RUN_ID.match(run_id):
            run_id = runs.resolve(conn, who.tenant, run_id)[0]  # the tenant's own name for a run
        filters = Filters(
            tenant=scope, run_id=run_id, actor=actor, action=action, since=when[0], until=when[1]
        )
        return page(conn, deps.api.projection_schema, filters, limit, cursor)
