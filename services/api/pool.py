"""A small pool of autocommit Postgres connections for the API's request threads, each lent for one
tenant: the connections log in as the role `keel_api`, which owns no table, so the projections'
row-level security (migration 0008) shows a request only the rows of the tenant it was lent for."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

log = logging.getLogger(__name__)
API_ROLE = "keel_api"
EVERY_TENANT = "*"  # an operator's requests: the policies read it as every tenant
# The session setting the policies read; empty between requests, so an idle connection sees nothing.
TENANT_SETTING = "keel.tenant"


class Pool:
    def __init__(
        self,
        url: Callable[[], str],
        size: int,
        connect_timeout: float = 5.0,
        role: str = API_ROLE,
    ) -> None:
        self._url, self._size, self._timeout, self._role = url, size, connect_timeout, role
        self._idle: queue.LifoQueue[psycopg.Connection[DictRow]] = queue.LifoQueue()

    @contextmanager
    def connection(self, tenant: str) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection that sees `tenant`'s rows only (`EVERY_TENANT` for an operator's request)."""
        if not tenant:
            raise ValueError("a connection is lent for a tenant (or EVERY_TENANT), never for nobody")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            conn.execute("SELECT set_config(%s, %s, false)", (TENANT_SETTING, tenant))
            yield conn
        finally:
            self._give_back(conn)

    def _connect(self) -> psycopg.Connection[DictRow]:
        """A connection logged in as the API's role; where the server will not let it log in (a password
        it was not given, say), the owner's connection with `SET ROLE`: row-level security applies to
        every query alike, but a query could `RESET ROLE`, so it is said loudly."""
        owner = self._url()
        # The owner's password (if the URL has one) is not the role's: the role's, where the server wants
        # one, comes from PGPASSWORD or ~/.pgpass.
        params = {k: v for k, v in conninfo_to_dict(owner).items() if k != "password"}
        try:
            conn = self._open(make_conninfo("", **{**params, "user": self._role}))
        except psycopg.OperationalError as exc:
            conn = self._open(owner)
            try:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self._role)))
            except psycopg.Error:
                conn.close()
                raise exc from None
            log.warning("cannot log in as %s (%s): using SET ROLE %s instead", self._role, exc, self._role)
        row = conn.execute(
            "SELECT rolsuper OR rolbypassrls AS unbound FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if row is None or row["unbound"]:
            conn.close()
            raise RuntimeError(f"role {self._role} bypasses row-level security: the API refuses it")
        return conn

    def _open(self, conninfo: str) -> psycopg.Connection[DictRow]:
        return psycopg.connect(
            conninfo, autocommit=True, connect_timeout=int(self._timeout), row_factory=dict_row
        )

    def _give_back(self, conn: psycopg.Connection[DictRow]) -> None:
        # A broken connection is dropped here, so the next request gets a fresh one; so is one whose
        # tenant cannot be cleared, or which is left inside a transaction.
        if not (conn.closed or conn.broken) and conn.info.transaction_status == TransactionStatus.IDLE:
            try:
                conn.execute("SELECT set_config(%s, '', false)", (TENANT_SETTING,))
            except psycopg.Error:
                conn.close()
        else:
            conn.close()
        if conn.closed or self._idle.qsize() >= self._size:
            conn.close()
        else:
            self._idle.put(conn)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
