"""The API's idempotency table: a request's client-chosen identities (Idempotency-Key, run id) claimed
in one transaction, so the answer for each is decided the moment the request arrives.

Stripe's semantics: the first request with a key fixes its body; the same body again names the same
run, another body is a conflict. A claimed request whose publish failed stays claimed but unpublished,
and a retry of the same body publishes it (a repeated run request is a no-op for the scheduler).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import DictRow

Conn = psycopg.Connection[DictRow]
IDEMPOTENCY_KEY = "idempotency_key"
RUN_ID = "run_id"


@dataclass(frozen=True)
class Claim:
    kind: str  # IDEMPOTENCY_KEY or RUN_ID
    client_key: str


@dataclass(frozen=True)
class Request:
    """What the claims are for: one run request of one tenant."""

    tenant: str
    claims: Sequence[Claim]  # run id first, then the key: one order for every request, no deadlock
    run_id: str  # Keel's run id, derived from the claims
    fingerprint: str
    workflow: str
    workflow_version: int


@dataclass(frozen=True)
class Decision:
    run_id: str
    workflow_version: int  # the first request's: a retry publishes what the first one would have
    published: bool  # the broker acknowledged it already: nothing to send again


class Conflict(Exception):
    """A claim of the request was made before by a different request."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(claim.kind)
        self.claim = claim


def claim(conn: Conn, req: Request) -> Decision:
    """Claim every identity of `req`, or none (Conflict). Concurrent claims of one identity queue on
    its primary key: the first commits, the others then read its row and compare fingerprints."""
    version, published = req.workflow_version, True
    with conn.transaction():
        for c in req.claims:
            row = conn.execute(
                "INSERT INTO api_idempotency (tenant_id, kind, client_key, run_id, fingerprint, workflow, "
                "workflow_version) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
                "RETURNING workflow_version, published_at",
                (req.tenant, c.kind, c.client_key, req.run_id, req.fingerprint, req.workflow, version),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT run_id, fingerprint, workflow_version, published_at FROM api_idempotency "
                    "WHERE tenant_id = %s AND kind = %s AND client_key = %s",
                    (req.tenant, c.kind, c.client_key),
                ).fetchone()
                assert row is not None  # rows are never deleted
                if row["fingerprint"] != req.fingerprint or row["run_id"] != req.run_id:
                    raise Conflict(c)
            version = row["workflow_version"]
            published = published and row["published_at"] is not None
    return Decision(req.run_id, version, published)


def mark_published(conn: Conn, tenant: str, claims: Sequence[Claim]) -> None:
    for c in claims:
        conn.execute(
            "UPDATE api_idempotency SET published_at = now() WHERE tenant_id = %s AND kind = %s "
            "AND client_key = %s AND published_at IS NULL",
            (tenant, c.kind, c.client_key),
        )


def keel_run_id(conn: Conn, tenant: str, client_run_id: str) -> str | None:
    """Keel's run id for a run id the tenant chose, if it chose it."""
    row = conn.execute(
        "SELECT run_id FROM api_idempotency WHERE tenant_id = %s AND kind = %s AND client_key = %s",
        (tenant, RUN_ID, client_run_id),
    ).fetchone()
    return None if row is None else str(row["run_id"])


def client_run_ids(conn: Conn, tenant: str, run_ids: Sequence[str]) -> dict[str, str]:
    """Keel's run id -> the run id the tenant chose for it, for those of `run_ids` it named itself."""
    if not run_ids:
        return {}
    rows = conn.execute(
        "SELECT run_id, client_key FROM api_idempotency WHERE tenant_id = %s AND kind = %s "
        "AND run_id = ANY(%s)",
        (tenant, RUN_ID, list(run_ids)),
    ).fetchall()
    return {r["run_id"]: r["client_key"] for r in rows}
