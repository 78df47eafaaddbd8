"""Projection schemas as a whole: create (from the migration's one DDL function), swap, drop, compare."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from services.projector.tables import TABLES

DEFAULT_SCHEMA = "keel"


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)).fetchone()
    return bool(row and row[0])


def create_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """A fresh schema holding every projection table, empty."""
    try:
        conn.execute("SELECT keel_create_projection_tables(%s)", (schema,))
    except psycopg.errors.UndefinedFunction:
        raise RuntimeError("the projection tables are not migrated yet: run `keel migrate`") from None


def ensure_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    if not schema_exists(conn, schema):
        create_schema(conn, schema)


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def swap_schema(conn: psycopg.Connection[Any], new: str, live: str) -> None:
    """Atomically replace schema `live` (tables and the projector's offsets) by schema `new`."""
    with conn.transaction():
        if schema_exists(conn, live):
            # Projector batches lock their offsets first: taking this lock first waits for the batch in
            # flight and holds the next one back, so dropping the tables cannot deadlock with it.
            conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(live, "projector_offsets")
                )
            )
            drop_schema(conn, live)
        conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(live))
        )


def differences(conn: psycopg.Connection[Any], a: str, b: str) -> dict[str, int]:
    """Rows in one schema's table and not in the other's (as multisets), per table; {} when equal.

    The projector's offsets are not compared: after a transaction's last message a live projector
    stores the next offset, a build the high watermark, which also counts the commit marker."""
    out = {}
    for table in TABLES:
        ta, tb = sql.Identifier(a, table), sql.Identifier(b, table)
        query = sql.SQL(
            "SELECT (SELECT count(*) FROM (TABLE {} EXCEPT ALL TABLE {}) x)"
            " + (SELECT count(*) FROM (TABLE {} EXCEPT ALL TABLE {}) y)"
        ).format(ta, tb, tb, ta)
        row = conn.execute(query).fetchone()
        if row and row[0]:
            out[table] = int(row[0])
    return out
