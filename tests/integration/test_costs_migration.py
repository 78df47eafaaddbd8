"""Migration 0006 (cost_micros, task and day on the costs projection): a schema altered by it has exactly
the shape a rebuild creates, and the rows it held get their micro-dollars, task and day."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from test_projection_migration import _RolledBack, shape, sql_of

from keel import db

pytestmark = pytest.mark.integration


def test_the_cost_micros_migration_alters_a_schema_to_what_a_rebuild_creates(stack):
    old, new = f"mig_old_{uuid.uuid4().hex[:8]}", f"mig_new_{uuid.uuid4().hex[:8]}"
    v5 = sql_of("agent_sub_steps")
    v5_function = v5[: v5.index("-- Every existing projection schema")]
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        # In one transaction, rolled back: the function as 0005 made it, a schema of that shape holding a
        # run and two of its costs (one a fraction of a micro-dollar), then 0006 over it.
        with pytest.raises(_RolledBack), conn.transaction():
            conn.execute(v5_function.encode())
            conn.execute("SELECT keel_create_projection_tables(%s)", (old,))
            conn.execute(
                f'INSERT INTO "{old}".runs (run_id, tenant_id, workflow, task_id, created_at, updated_at) '
                "VALUES ('r1', 'acme', 'support', 'ticket-7', now(), now())"
            )
            conn.execute(
                f'INSERT INTO "{old}".costs (event_id, tenant_id, workflow, run_id, cost_usd, ts) VALUES '
                "('e1', 'acme', 'support', 'r1', 0.0000012, '2026-03-01T23:59:59.5+00'), "
                "('e2', 'acme', 'support', 'r1', 12.5, '2026-03-02T00:00:00+01')"
            )
            conn.execute(sql_of("cost_micros").encode())
            conn.execute("SELECT keel_create_projection_tables(%s)", (new,))
            assert shape(conn, old) == shape(conn, new)
            rows = conn.execute(
                f'SELECT event_id, cost_micros, task_id, day, cost_usd FROM "{old}".costs ORDER BY 1'
            ).fetchall()
            assert rows == [
                ("e1", 2, "ticket-7", date(2026, 3, 1), Decimal("0.0000012")),  # rounded up, never down
                ("e2", 12_500_000, "ticket-7", date(2026, 3, 1), Decimal("12.5")),  # the UTC day
            ]
            raise _RolledBack
