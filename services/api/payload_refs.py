"""Run details show payloads that travelled by reference as claim checks, read from the run's events."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from keel.claimcheck import marker


def with_claim_checks(conn: Any, schema: str, tenant: str, detail: dict[str, Any]) -> dict[str, Any]:
    """A run's detail with each payload that travelled by reference shown as its claim-check object
    (`{"$keel_blob": ref}`, served by the route above) where the projection holds no payload: a null
    there would read as "no input" or "no output"."""
    query = sql.SQL(
        "SELECT event, step, body->>'input_ref' AS input_ref, body->>'output_ref' AS output_ref FROM {} "
        "WHERE run_id = %s AND tenant_id = %s AND event IN ('created', 'completed', 'step_committed') "
        "AND ((body->>'input_json' IS NULL AND body->>'input_ref' IS NOT NULL) "
        "OR (body->>'output_json' IS NULL AND body->>'output_ref' IS NOT NULL))"
    ).format(sql.Identifier(schema, "events"))
    rows = conn.execute(query, (detail["keel_run_id"], tenant)).fetchall()
    for row in rows:
        if row["event"] == "created" and detail.get("input") is None and row["input_ref"]:
            detail["input"] = marker(row["input_ref"])
        elif row["event"] == "completed" and detail.get("output") is None and row["output_ref"]:
            detail["output"] = marker(row["output_ref"])
        elif row["event"] == "step_committed" and row["output_ref"]:
            for step in detail.get("steps", []):
                if step.get("step") == row["step"] and step.get("output") is None:
                    step["output"] = marker(row["output_ref"])
    return detail
