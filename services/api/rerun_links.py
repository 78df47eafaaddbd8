"""A run's links to its origin and its re-runs (docs/rerun.md), read from the created facts."""

from __future__ import annotations

from typing import Any

from psycopg import sql

Conn = Any


def links(conn: Conn, schema: str, tenant: str, run_id: str) -> dict[str, Any]:
    """The run's origin (`rerun_of`) and its re-runs (`reruns`, oldest first), from the created facts."""
    table = sql.Identifier(schema, "events")
    mine = conn.execute(
        sql.SQL(
            "SELECT body -> 'run' ->> 'rerun_of' AS origin FROM {} "
            "WHERE run_id = %s AND tenant_id = %s AND event = 'created' LIMIT 1"
        ).format(table),
        (run_id, tenant),
    ).fetchone()
    reruns = conn.execute(
        sql.SQL(
            "SELECT run_id FROM {} WHERE tenant_id = %s AND event = 'created' "
            "AND body -> 'run' ->> 'rerun_of' = %s ORDER BY ts, run_id"
        ).format(table),
        (tenant, run_id),
    ).fetchall()
    return {"rerun_of": mine["origin"] if mine else None, "reruns": [r["run_id"] for r in reruns]}
