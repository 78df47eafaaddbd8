"""Migrations that change the projection tables: a schema altered by one has exactly the shape a rebuild
creates (the DDL function), so swapping a rebuild in changes nothing but the rows."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from keel import db
from services.projector.tables import TABLES

pytestmark = pytest.mark.integration


def shape(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    columns = conn.execute(
        "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
        (schema,),
    ).fetchall()
    keys = conn.execute(
        "SELECT i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s ORDER BY 1, 2",
        (schema,),
    ).fetchall()
    strip = (f'"{schema}".', f"{schema}.")
    normalised = []
    for table, index in keys:
        for s in strip:
            table, index = table.replace(s, ""), index.replace(s, "")
        normalised.append((table, index))
    return {"columns": columns, "indexes": normalised}


def sql_of(name: str) -> str:
    return next(text for _, n, text in db.migrations() if n == name)


def test_the_agent_sub_steps_migration_alters_a_schema_to_what_a_rebuild_creates(stack):
    old, new = f"mig_old_{uuid.uuid4().hex[:8]}", f"mig_new_{uuid.uuid4().hex[:8]}"
    v2 = sql_of("projections")
    v2_function = v2[: v2.index("SELECT keel_create_projection_tables('keel');")]
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        # In one transaction, rolled back: the function as 0002 made it, a schema of that shape holding
        # a projected agent fact, then 0005 over it. Nothing of it outlives the test.
        with pytest.raises(_RolledBack), conn.transaction():
            conn.execute(v2_function.encode())
            conn.execute("SELECT keel_create_projection_tables(%s)", (old,))
            conn.execute(
                f'INSERT INTO "{old}".events (event_id, run_id, tenant_id, topic, "partition", "offset", ts, '
                "event, attempt, body) VALUES ('e1', 'r1', 'acme', 't', 0, 0, now(), 'model_called', 1, "
                """'{"call": "turn-1"}')"""
            )
            conn.execute(
                f"INSERT INTO \"{old}\".attempts (run_id, step, attempt) VALUES ('r1', 'send_email', 1)"
            )
            conn.execute(sql_of("agent_sub_steps").encode())
            conn.execute("SELECT keel_create_projection_tables(%s)", (new,))
            altered, created = shape(conn, old), shape(conn, new)
            assert {c[0] for c in created["columns"]} >= set(TABLES) - {"cases", "audit"}  # 0007, 0008
            assert altered == created
            assert conn.execute(f'SELECT call FROM "{old}".events').fetchall() == [("turn-1",)]
            assert conn.execute(f'SELECT call FROM "{old}".attempts').fetchall() == [("",)]
            raise _RolledBack


class _RolledBack(Exception):
    pass
