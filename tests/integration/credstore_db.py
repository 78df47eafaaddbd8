"""A credential table of its own per test, in a fresh schema of the shared database."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg

from keel import db
from keel.credstore import Keyring, PostgresCredentials
from keel.settings import Settings


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def keyring(keys: dict[str, str], current: str) -> Keyring:
    return Keyring.from_config(json.dumps(keys), current)


def with_search_path(url: str, schema: str) -> str:
    """The database URL whose connections see `schema` first: the code under test runs unchanged."""
    return f"{url}{'&' if '?' in url else '?'}options={quote(f'-c search_path={schema}')}"


@dataclass
class CredDb:
    url: str  # DATABASE_URL pointing into the test's schema
    schema: str
    conn: psycopg.Connection[Any]  # the test's own view, for inspecting and corrupting rows

    def store(self, ring: Keyring, **kwargs: Any) -> PostgresCredentials:
        """A store whose connections carry the schema's name, so a test can find and cut them."""
        return PostgresCredentials(
            lambda: psycopg.connect(self.url, autocommit=True, application_name=self.schema), ring, **kwargs
        )

    def cut_connections(self) -> int:
        """Terminate the stores' server connections (what a database restart or failover does)."""
        found = self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (self.schema,),
        ).fetchall()
        return len(found)

    def rows(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT tenant_id, name, key_id, nonce, ciphertext FROM tool_credentials ORDER BY 1, 2"
        ).fetchall()


def credential_db(stack: Settings) -> Iterator[CredDb]:
    schema = f"cred_{uuid.uuid4().hex[:10]}"
    base = stack.db_url()
    assert base
    url = with_search_path(base, schema)
    (sql,) = [s for _, name, s in db.migrations() if name == "tool_credentials"]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.encode())
                yield CredDb(url, schema, conn)
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
