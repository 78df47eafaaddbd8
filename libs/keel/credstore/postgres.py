"""Tool credentials in PostgreSQL, sealed per row (keel.credstore.envelope), read per tenant.

A lookup asks only for the calling tenant's row and the explicit shared row (`*`), and opens the value
with the tenant it asked for as associated data: even a row copied or renamed in the table never
decrypts for another tenant. Lookups are cached for a few seconds (`ttl_s`) because adapters look a
credential up on every tool call; the short TTL bounds how long another process's set, delete or
rotation goes unseen. The cache is keyed by (tenant, name), so it cannot cross tenants either.

A lookup raises CredentialError for a row no retry mends (its key is missing, it was tampered with or
moved) and CredentialUnavailable when the database cannot be reached (transient).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import errors

from keel.credstore.envelope import CredentialError, CredentialUnavailable, Keyring, Sealed
from keel.credstore.static import SHARED_TENANT, resolve

Connect = Callable[[], "psycopg.Connection[Any]"]


@dataclass(frozen=True)
class Entry:
    """What `keel credentials list` shows: never the value."""

    tenant_id: str
    name: str
    key_id: str
    created_at: datetime
    updated_at: datetime


class Rotation(NamedTuple):
    resealed: int  # rows moved to the current key
    total: int  # rows in the table


class PostgresCredentials:
    """A CredentialSource over the `tool_credentials` table, plus the operator's writes."""

    def __init__(
        self,
        connect: Connect,
        keyring: Keyring,
        ttl_s: float = 5.0,
        shared: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.keyring = keyring
        self._ttl = ttl_s
        self._shared = shared
        self._clock = clock
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # one connection, one statement at a time
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}

    def __repr__(self) -> str:
        return f"PostgresCredentials({self.keyring!r}, ttl_s={self._ttl}, shared={self._shared})"

    @contextmanager
    def _db(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                yield self._conn
            except errors.UndefinedTable:
                raise CredentialError(
                    "the table tool_credentials does not exist in this database: run `keel migrate`"
                ) from None
            except psycopg.OperationalError as exc:
                # A dropped or refused connection: the next use opens a new one.
                if self._conn is not None:
                    self._conn.close()
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CredentialUnavailable(f"cannot reach the credential store: {reason}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def lookup(self, tenant_id: str, name: str) -> str | None:
        now = self._clock()
        hit = self._cache.get((tenant_id, name))
        if hit is not None and hit[0] > now:
            return hit[1]
        value = self._read(tenant_id, name)
        if self._ttl > 0:
            self._cache[(tenant_id, name)] = (now + self._ttl, value)
        return value

    def _read(self, tenant_id: str, name: str) -> str | None:
        if not tenant_id:
            return None
        owners = [tenant_id, SHARED_TENANT] if self._shared else [tenant_id]
        for attempt in (1, 2):  # a read is safe to repeat: once more on a fresh connection
            try:
                with self._db() as conn:
                    found = conn.execute(
                        "SELECT tenant_id, key_id, nonce, ciphertext FROM tool_credentials "
                        "WHERE name = %s AND tenant_id = ANY(%s)",
                        (name, owners),
                    ).fetchall()
                break
            except CredentialUnavailable:
                if attempt == 2:
                    raise
        rows = {t: Sealed(k, bytes(n), bytes(c)) for t, k, n, c in found}
        owner = resolve(tenant_id, rows, self._shared)
        # Opened as the owner asked for, not as the row claims: the associated data is the second lock.
        return None if owner is None else self.keyring.open(owner, name, rows[owner])

    def put(self, tenant_id: str, name: str, value: str) -> None:
        if not tenant_id or not name:
            raise ValueError("a credential needs a tenant and a name")
        if not value:
            raise ValueError(f"the value of {name!r} for tenant {tenant_id!r} is empty")
        sealed = self.keyring.seal(tenant_id, name, value)
        with self._db() as conn:
            conn.execute(
                "INSERT INTO tool_credentials (tenant_id, name, key_id, nonce, ciphertext) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, name) DO UPDATE SET "
                "key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext, "
                "updated_at = now()",
                (tenant_id, name, sealed.key_id, sealed.nonce, sealed.ciphertext),
            )
        self._forget(name)

    def delete(self, tenant_id: str, name: str) -> bool:
        with self._db() as conn:
            cur = conn.execute(
                "DELETE FROM tool_credentials WHERE tenant_id = %s AND name = %s", (tenant_id, name)
            )
        self._forget(name)
        return cur.rowcount > 0

    def _forget(self, name: str) -> None:
        # A shared row's change concerns every tenant: drop the name for all of them.
        for key in [k for k in self._cache if k[1] == name]:
            self._cache.pop(key, None)

    def entries(self, tenant_id: str | None = None) -> list[Entry]:
        with self._db() as conn:
            found = conn.execute(
                "SELECT tenant_id, name, key_id, created_at, updated_at FROM tool_credentials "
                "WHERE %(t)s::text IS NULL OR tenant_id = %(t)s ORDER BY tenant_id, name",
                {"t": tenant_id},
            ).fetchall()
        return [Entry(*row) for row in found]

    def rotate(self) -> Rotation:
        """Reseal every row not under the current key, in one transaction: a row that cannot be read
        (its key missing, or tampered) stops the rotation with its name and nothing is changed."""
        current = self.keyring.current
        with self._db() as conn, conn.transaction():
            total = conn.execute("SELECT count(*) FROM tool_credentials").fetchone()
            stale = conn.execute(
                "SELECT tenant_id, name, key_id, nonce, ciphertext FROM tool_credentials "
                "WHERE key_id <> %s ORDER BY tenant_id, name FOR UPDATE",
                (current,),
            ).fetchall()
            for tenant_id, name, key_id, nonce, ciphertext in stale:
                fresh = self.keyring.reseal(tenant_id, name, Sealed(key_id, bytes(nonce), bytes(ciphertext)))
                conn.execute(
                    "UPDATE tool_credentials SET key_id = %s, nonce = %s, ciphertext = %s, "
                    "updated_at = now() WHERE tenant_id = %s AND name = %s",
                    (fresh.key_id, fresh.nonce, fresh.ciphertext, tenant_id, name),
                )
        self._cache.clear()
        return Rotation(len(stale), int(total[0]) if total else 0)
