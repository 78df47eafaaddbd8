"""Migration 0007 (the cases projection): a schema altered by it has exactly the shape a rebuild creates,
with every table the projector writes, and the rows it held are kept."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from test_projection_migration import _RolledBack, shape, sql_of

from keel import db
from services.projector.tables import TABLES

pytestmark = pytest.mark.integration


def test_the_cases_migration_adds_the_cases_table_to_a_schema_as_a_rebuild_creates_it(stack):
    old, new = f"mig_old_{uuid.uuid4().hex[:8]}", f"mig_new_{uuid.uuid4().hex[:8]}"
    v6 = sql_of("cost_micros")
    v6_function = v6[: v6.index("DO $do$")]
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        # In one transaction, rolled back: the function as 0006 made it, a schema of that shape holding a
        # run, then 0007 over it (twice: the second finds nothing to do).
        with pytest.raises(_RolledBack), conn.transaction():
            conn.execute(v6_function.encode())
            conn.execute("SELECT keel_create_projection_tables(%s)", (old,))
            conn.execute(
                f'INSERT INTO "{old}".runs (run_id, tenant_id, workflow, created_at, updated_at) '
                "VALUES ('r1', 'acme', 'support', now(), now())"
            )
            for _ in range(2):
                conn.execute(sql_of("cases").encode())
            conn.execute("SELECT keel_create_projection_tables(%s)", (new,))
            altered, created = shape(conn, old), shape(conn, new)
            tables = set(TABLES) - {"audit"} | {"projector_offsets"}  # audit: 0008
            assert {c[0] for c in created["columns"]} == tables
            assert altered == created
            assert conn.execute(f'SELECT run_id FROM "{old}".runs').fetchall() == [("r1",)]
            raise _RolledBack
