"""Reads from the projection tables, always scoped to the calling tenant, shaped as API JSON."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from keel.intake import RUN_ID_PATTERN

Conn = psycopg.Connection[DictRow]
_RUN_ID = re.compile(RUN_ID_PATTERN)


def _json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in row.items()}


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    return v


def owner_of(conn: Conn, schema: str, run_id: str) -> dict[str, Any] | None:
    """Who owns `run_id` and what it was asked to do; for the submit checks only, never returned."""
    query = sql.SQL("SELECT tenant_id, workflow, input_json FROM {} WHERE run_id = %s")
    return conn.execute(query.format(sql.Identifier(schema, "runs")), (run_id,)).fetchone()


_RUN = (
    "run_id, workflow, workflow_version, task_id, status, input_json AS input, output_json AS output, "
    "error, cost_usd, created_at, updated_at, ended_at"
)
# An agent step also has its agent and the turns it took (null for other steps); its attempts are its
# sub-steps' (`call`: turn-N, turn-N.call-I; null for a plain step's), in the order they started.
_STEP = (
    "step, kind, status, idempotency_key, external_id, output_json AS output, cost_usd, started_at, "
    "committed_at, updated_at, agent_id, turns"
)
_ATTEMPT = "step, NULLIF(call, '') AS call, attempt, status, started_at, ended_at, failure_class, error"


def run_detail(conn: Conn, schema: str, tenant: str, run_id: str) -> dict[str, Any] | None:
    t = {name: sql.Identifier(schema, name) for name in ("runs", "steps", "attempts")}
    run = conn.execute(
        sql.SQL(f"SELECT {_RUN} FROM {{}} WHERE run_id = %s AND tenant_id = %s").format(t["runs"]),
        (run_id, tenant),
    ).fetchone()
    if run is None:
        return None
    steps = conn.execute(
        sql.SQL(f"SELECT {_STEP} FROM {{}} WHERE run_id = %s ORDER BY started_at NULLS LAST, step").format(
            t["steps"]
        ),
        (run_id,),
    ).fetchall()
    attempts = conn.execute(
        sql.SQL(
            f"SELECT {_ATTEMPT} FROM {{}} WHERE run_id = %s "
            "ORDER BY step, started_at NULLS LAST, call, attempt"
        ).format(t["attempts"]),
        (run_id,),
    ).fetchall()
    by_step: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_step.setdefault(a.pop("step"), []).append(_json(a))
    out = _json(run)
    out["steps"] = [{**_json(s), "attempts": by_step.get(s["step"], [])} for s in steps]
    return out


# `event` is the contract's name for the kind; `body` is the whole event (retry, tool, model details);
# `call` is an agent step's sub-step (turn-N, turn-N.call-I), null for other facts.
_EVENT = (
    "event_id, event AS kind, event, step, call, attempt, ts, source, idempotency_key, external_id, "
    'failure_class, error, cost_usd, "partition", "offset", body'
)


def timeline(
    conn: Conn, schema: str, tenant: str, run_id: str, call: str | None = None
) -> list[dict[str, Any]]:
    """The run's facts in log order; with `call`, only that sub-step's (a turn's include its tool calls)."""
    where, params = "run_id = %s AND tenant_id = %s", [run_id, tenant]
    if call is not None:
        # starts_with, not LIKE: a call name with % or _ in it must match only itself.
        where += " AND (call = %s OR starts_with(call, %s))"
        params += [call, f"{call}.call-"]
    order = 'ORDER BY topic, "partition", "offset"'
    query = sql.SQL(f"SELECT {_EVENT} FROM {{}} WHERE {where} {order}").format(
        sql.Identifier(schema, "events")
    )
    return [_json(r) for r in conn.execute(query, params)]


class BadCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, run_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), run_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        # A forged cursor must not reach Postgres with what it cannot compare (a NUL, say).
        if not (isinstance(run_id, str) and _RUN_ID.match(run_id)):
            raise ValueError("not a run id")
        return datetime.fromisoformat(ts), run_id
    except (ValueError, TypeError, binascii.Error):
        raise BadCursor("invalid cursor: pass the next_cursor of a previous page unchanged") from None


@dataclass(frozen=True)
class RunFilter:
    """More ways to narrow a run list (the console's; the JSON list names status and workflow only)."""

    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    failure_class: str | None = None  # an attempt of the run failed with it
    min_cost_usd: float | None = None  # spent more than this
    # A run id (Keel's or the tenant's own), a task id, or an idempotency key (a step's, or the
    # Idempotency-Key of the request that submitted the run).
    search: str | None = None


def _narrowed(schema: str, narrow: RunFilter) -> tuple[list[sql.Composable], list[Any]]:
    where: list[sql.Composable] = []
    params: list[Any] = []
    if narrow.since is not None:
        where.append(sql.SQL("created_at >= %s"))
        params.append(narrow.since)
    if narrow.until is not None:
        where.append(sql.SQL("created_at < %s"))
        params.append(narrow.until)
    if narrow.min_cost_usd is not None:
        where.append(sql.SQL("cost_usd > %s"))
        params.append(narrow.min_cost_usd)
    if narrow.failure_class is not None:
        where.append(
            sql.SQL("EXISTS (SELECT 1 FROM {} a WHERE a.run_id = r.run_id AND a.failure_class = %s)").format(
                sql.Identifier(schema, "attempts")
            )
        )
        params.append(narrow.failure_class)
    if narrow.search is not None:
        where.append(
            sql.SQL(
                "(r.run_id = %s OR task_id = %s "
                "OR r.run_id IN (SELECT c.run_id FROM api_idempotency c WHERE c.tenant_id = r.tenant_id "
                "AND c.client_key = %s) "
                "OR EXISTS (SELECT 1 FROM {} s WHERE s.run_id = r.run_id AND s.idempotency_key = %s))"
            ).format(sql.Identifier(schema, "steps"))
        )
        params.extend([narrow.search] * 4)
    return where, params


def _run_where(
    schema: str, tenant: str | None, status: str | None, workflow: str | None, narrow: RunFilter
) -> tuple[list[sql.Composable], list[Any]]:
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    for column, value in (("tenant_id", tenant), ("status", status), ("workflow", workflow)):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    more, more_params = _narrowed(schema, narrow)
    return where + more, params + more_params


def list_runs(
    conn: Conn,
    schema: str,
    tenant: str | None,
    *,
    status: str | None,
    workflow: str | None,
    limit: int,
    cursor: str | None,
    narrow: RunFilter = RunFilter(),
) -> tuple[list[dict[str, Any]], str | None]:
    """The tenant's runs (every tenant's for None, with their tenant), newest first; keyset pagination on
    (created_at, run_id), stable under inserts."""
    where, params = _run_where(schema, tenant, status, workflow, narrow)
    if cursor is not None:
        where.append(sql.SQL("(created_at, r.run_id) < (%s, %s)"))
        params.extend(decode_cursor(cursor))
    owner = sql.SQL("tenant_id, " if tenant is None else "")
    query = sql.SQL(
        "SELECT r.run_id, {}workflow, workflow_version, task_id, status, cost_usd, created_at, updated_at, "
        "ended_at FROM {} r WHERE {} ORDER BY created_at DESC, r.run_id DESC LIMIT %s"
    ).format(owner, sql.Identifier(schema, "runs"), sql.SQL(" AND ").join(where))
    rows = conn.execute(query, (*params, limit + 1)).fetchall()
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["run_id"]) if more else None
    return [_json(r) for r in page], next_cursor


def status_counts(
    conn: Conn, schema: str, tenant: str | None, workflow: str | None, narrow: RunFilter = RunFilter()
) -> dict[str, int]:
    """How many of the runs a list would show are in each status."""
    where, params = _run_where(schema, tenant, None, workflow, narrow)
    query = sql.SQL("SELECT status, count(*) AS n FROM {} r WHERE {} GROUP BY status ORDER BY status").format(
        sql.Identifier(schema, "runs"), sql.SQL(" AND ").join(where)
    )
    return {row["status"]: int(row["n"]) for row in conn.execute(query, params)}
