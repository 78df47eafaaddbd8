"""Reads of cases (docs/quarantine.md) from the projections, shaped as API JSON. A tenant's reads are
scoped to its tenant in SQL; an operator's (tenant None) see every tenant's."""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from services.api.queries import Conn, _json

# What a listing shows of a case; the case itself adds its evidence and its decision.
_SUMMARY = (
    "case_id, tenant_id, run_id, workflow, step, call, attempt, kind, status, reason, failure_class, "
    "idempotency_key, input_ref, opened_by, opened_at, deadline, decision, decided_by, decided_at"
)
_CASE = (
    f"{_SUMMARY}, input_json AS input, output_ref, output_json AS output, error, decision_reason, "
    "decision_command_id, decision_key, decision_json"
)
_ATTEMPT = "NULLIF(call, '') AS call, attempt, status, started_at, ended_at, failure_class, error"
STATUSES = ("open", "decided", "all")


def list_cases(
    conn: Conn,
    schema: str,
    tenant: str | None,
    *,
    status: str = "open",
    kind: str | None = None,
    run_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Cases oldest first (the one waiting longest heads the queue)."""
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    filters = {
        "tenant_id": tenant,
        "kind": kind,
        "run_id": run_id,
        "status": None if status == "all" else status,
    }
    for column, value in filters.items():
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    query = sql.SQL(f"SELECT {_SUMMARY} FROM {{}} WHERE {{}} ORDER BY opened_at NULLS LAST, case_id LIMIT %s")
    rows = conn.execute(
        query.format(sql.Identifier(schema, "cases"), sql.SQL(" AND ").join(where)), (*params, limit)
    ).fetchall()
    return [_json(r) for r in rows]


def get_case(conn: Conn, schema: str, tenant: str | None, case_id: str) -> dict[str, Any] | None:
    """The case with its evidence, its decision, and the attempt history of its step (its sub-step's,
    for an agent's tool call); None when there is none this caller may see."""
    where, params = "case_id = %s", [case_id]
    if tenant is not None:
        where, params = where + " AND tenant_id = %s", [case_id, tenant]
    row = conn.execute(
        sql.SQL(f"SELECT {_CASE} FROM {{}} WHERE {where}").format(sql.Identifier(schema, "cases")), params
    ).fetchone()
    if row is None:
        return None
    case = _json(row)
    case["attempts"] = []
    if case["step"]:
        attempts = conn.execute(
            sql.SQL(
                f"SELECT {_ATTEMPT} FROM {{}} WHERE run_id = %s AND step = %s AND call = %s ORDER BY attempt"
            ).format(sql.Identifier(schema, "attempts")),
            (case["run_id"], case["step"], case["call"] or ""),
        ).fetchall()
        case["attempts"] = [_json(a) for a in attempts]
    return case


def run_of(conn: Conn, schema: str, run_id: str) -> dict[str, Any] | None:
    """A run's owner, workflow and status: for the control routes' checks (never returned as such)."""
    query = sql.SQL("SELECT run_id, tenant_id, workflow, workflow_version, status FROM {} WHERE run_id = %s")
    return conn.execute(query.format(sql.Identifier(schema, "runs")), (run_id,)).fetchone()


def case_evidence(conn: Conn, schema: str, case: dict[str, Any]) -> dict[str, Any] | None:
    """The body of the fact that opened the case (which tool, what it said): for checking a decision."""
    kinds = ("quarantined", "approval_requested")
    rows = conn.execute(
        sql.SQL(
            "SELECT body FROM {} WHERE run_id = %s AND event = ANY(%s) AND step IS NOT DISTINCT FROM %s "
            'AND attempt = %s ORDER BY topic, "partition", "offset" DESC LIMIT 1'
        ).format(sql.Identifier(schema, "events")),
        (case["run_id"], list(kinds), case["step"], case["attempt"] or 0),
    ).fetchall()
    return rows[0]["body"] if rows else None


def refusal(conn: Conn, schema: str, run_id: str, command_id: str) -> str | None:
    """Why the scheduler refused command `command_id` (its `decision_refused` fact), or None."""
    rows = conn.execute(
        sql.SQL("SELECT error, body FROM {} WHERE run_id = %s AND event = 'decision_refused'").format(
            sql.Identifier(schema, "events")
        ),
        (run_id,),
    ).fetchall()
    for row in rows:
        try:
            record = json.loads((row["body"] or {}).get("output_json") or "{}")
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("command_id") == command_id:
            return str(row["error"] or "refused")
    return None
