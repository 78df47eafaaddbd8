"""PostgreSQL: migrations apply once and are recorded; the embedded server has pgvector."""

from __future__ import annotations

import psycopg
import pytest

from keel import db

pytestmark = pytest.mark.integration


def test_migrations_apply_once_and_are_recorded(stack):
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        assert db.migrate(conn) == []  # applying twice is a no-op
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert [v for v, _ in rows] == [v for v, _, _ in db.migrations()]
        assert conn.execute("SELECT count(*) FROM consumer_offsets").fetchone() is not None


def test_an_edited_migration_is_refused(stack):
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        try:
            with pytest.raises(RuntimeError, match="changed after it was applied"):
                db.migrate(conn)
        finally:
            import hashlib

            sql = db.migrations()[0][2]
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = 1",
                (hashlib.sha256(sql.encode()).hexdigest(),),
            )


def test_pgvector_is_available(stack):
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        assert conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone() == (1.0,)
