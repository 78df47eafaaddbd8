"""Cost as one query: the costs projection grouped by the columns asked for, summed in integer
micro-dollars, with the total in the same statement (GROUPING SETS), scoped to a tenant or not at all."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from psycopg import sql
from pydantic import TypeAdapter, ValidationError

# The API's names for the costs projection's columns (services/projector, migration 0006).
GROUP_COLUMNS: dict[str, str] = {
    "tenant": "tenant_id",
    "workflow": "workflow",
    "run": "run_id",
    "step": "step",
    "agent": "agent_id",
    "task": "task_id",
    "model": "model",
    "day": "day",
}
_NAME = "(" + "|".join(GROUP_COLUMNS) + ")"
# What the API document promises group_by accepts (checked here, so an unknown name is told by name).
GROUP_PATTERN = f"^({_NAME}(,{_NAME})*)?$"


# A row written by a projector older than cost_micros (during an upgrade): its USD rounded up, as
# keel.pricing rounds.
MICROS = sql.SQL("COALESCE(cost_micros, ceil(cost_usd * 1000000)::bigint)")


class BadCostQuery(ValueError):
    """A query the API answers 422 to, with this message."""


@dataclass(frozen=True, slots=True)
class CostQuery:
    group_by: tuple[str, ...]
    tenant: str | None  # None: every tenant (operators only)
    start: datetime | None  # inclusive
    end: datetime | None  # exclusive


def group_by_of(text: str | None) -> tuple[str, ...]:
    """`tenant,agent,...` as known names, in the order given, without repeats; 422 for an unknown one."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUP_COLUMNS]
    if unknown:
        raise BadCostQuery(
            f"unknown group_by column(s) {unknown}: group by any of {', '.join(GROUP_COLUMNS)}"
        )
    return tuple(dict.fromkeys(names))


_INSTANT = TypeAdapter(datetime)
_DATED = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")


def instant_of(name: str, text: str | None, empty_is_none: bool = True) -> datetime | None:
    """An RFC 3339 date-time (UTC when it names no zone) or an ISO date (its midnight, UTC). An empty text
    is no bound for a form's field (the console); the JSON API documents a date-time, so there it is
    malformed (`empty_is_none=False`)."""
    if text is None or (text == "" and empty_is_none):
        return None
    try:
        if not _DATED.match(text):  # pydantic would read "350" as seconds since the epoch
            raise ValueError(text)
        at = _INSTANT.validate_python(text)
    except (ValidationError, ValueError):
        raise BadCostQuery(f"{name} must be an ISO date or date-time, not {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def statement(schema: str, q: CostQuery) -> tuple[sql.Composed, list[Any]]:
    """One SELECT: a row per group (sorted by its columns) and the total row (`is_total`), each with its
    sum of cost_micros (numeric in Postgres: exact however many facts) and its count of facts."""
    keys = [sql.Identifier(GROUP_COLUMNS[g]) for g in q.group_by]
    cols = [sql.SQL("{} AS {}").format(k, sql.Identifier(g)) for k, g in zip(keys, q.group_by, strict=True)]
    where, params = [sql.SQL("TRUE")], list[Any]()
    if q.tenant is not None:
        where.append(sql.SQL("tenant_id = %s"))
        params.append(q.tenant)
    if q.start is not None:
        where.append(sql.SQL("ts >= %s"))
        params.append(q.start)
    if q.end is not None:
        where.append(sql.SQL("ts < %s"))
        params.append(q.end)
    listed = sql.SQL(", ").join(keys)
    # GROUPING() tells the total row (the empty grouping set) from a group whose columns are null.
    total_flag = sql.SQL("GROUPING({}) <> 0").format(listed) if keys else sql.SQL("TRUE")
    grouping = sql.SQL("GROUP BY GROUPING SETS (({}), ())").format(listed) if keys else sql.SQL("")
    order = sql.SQL(", ").join([sql.SQL("is_total"), *[sql.SQL("{} NULLS FIRST").format(k) for k in keys]])
    query = sql.SQL(
        "SELECT {cols}{sep}{total} AS is_total, COALESCE(sum({micros}), 0) AS cost_micros, "
        "count(*) AS facts FROM {table} WHERE {where} {grouping} ORDER BY {order}"
    ).format(
        cols=sql.SQL(", ").join(cols),
        sep=sql.SQL(", ") if cols else sql.SQL(""),
        total=total_flag,
        micros=MICROS,
        table=sql.Identifier(schema, "costs"),
        where=sql.SQL(" AND ").join(where),
        grouping=grouping,
        order=order,
    )
    return query, params


def usd_text(micros: int | Decimal) -> str:
    """Micro-dollars as exact USD text with six places: 1234567 -> "1.234567"."""
    return format(Decimal(micros).scaleb(-6), "f")


def _amount(row: dict[str, Any]) -> dict[str, Any]:
    micros = int(row["cost_micros"])
    return {"cost_micros": micros, "cost_usd": usd_text(micros), "facts": int(row["facts"])}


def answer(q: CostQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows as API JSON: each group's columns and amounts, then the total."""
    groups, total = [], {"cost_micros": 0, "cost_usd": usd_text(0), "facts": 0}
    for row in rows:
        if row["is_total"]:
            total = _amount(row)
            continue
        keys = {g: (row[g].isoformat() if isinstance(row[g], date) else row[g]) for g in q.group_by}
        groups.append({**keys, **_amount(row)})
    return {
        "group_by": list(q.group_by),
        "tenant": q.tenant,
        "from": q.start.isoformat() if q.start else None,
        "to": q.end.isoformat() if q.end else None,
        "rows": groups,
        "total": total,
    }
