"""A run's payloads by reference: `GET /v1/runs/{run_id}/blobs/{ref}` gives the JSON a ref names.

Timelines show large inputs and outputs by their `sha256:` ref (the events carry the ref, not the
payload); this route resolves one for the run's tenant. Only a ref that one of the run's events names
is served, and only from the tenant's own part of the blob store: another tenant's run, or a ref the run
never named, is a 404 like a run that does not exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from psycopg import sql
from starlette.concurrency import run_in_threadpool

from keel.blobs import REF_PATTERN, BlobMissing, BlobStoreUnavailable, is_ref, store_for
from services.api import docs
from services.api.deps import Deps, Viewer, deps_of
from services.api.errors import ApiError
from services.api.runs import not_found, resolve

router = APIRouter()
_JSON = {"description": "the payload's JSON, as stored", "content": {"application/json": {}}}


@router.get(
    "/v1/runs/{run_id}/blobs/{ref}",
    response_model=None,
    responses={200: _JSON, **docs.errors(401, 404, 503)},
)
async def blob(request: Request, run_id: str, ref: str, tenant: Viewer) -> Response:
    deps = deps_of(request)
    return Response(await run_in_threadpool(read, deps, tenant, run_id, ref), media_type="application/json")


def read(deps: Deps, tenant: str, run_id: str, ref: str) -> bytes:
    """The payload `ref` names, when an event of `tenant`'s run `run_id` names it; 404 otherwise."""
    if not is_ref(ref):  # no event can name it (and Postgres could not even compare a NUL)
        raise ApiError(404, "blob_not_found", f"{ref!r} is not a blob ref ({REF_PATTERN})")
    with deps.pool.connection(tenant) as conn:
        keel_id, _ = resolve(conn, tenant, run_id)
        named = _named_by(conn, deps.api.projection_schema, tenant, keel_id, ref)
    if named is None:
        raise not_found(run_id)
    if not named:
        raise ApiError(404, "blob_not_found", f"no event of run {run_id!r} names {ref}")
    try:
        return store_for(deps.settings).get(tenant, ref)
    except BlobMissing as exc:
        raise ApiError(404, "blob_missing", str(exc)) from None
    except BlobStoreUnavailable as exc:
        raise ApiError(503, "blob_store_unavailable", str(exc)) from None


def _named_by(conn: Any, schema: str, tenant: str, run_id: str, ref: str) -> bool | None:
    """Whether an event of the tenant's run names `ref`; None when the tenant has no such run."""
    query = sql.SQL(
        "SELECT bool_or(body->>'input_ref' = %s OR body->>'output_ref' = %s) AS named "
        "FROM {} WHERE run_id = %s AND tenant_id = %s"
    ).format(sql.Identifier(schema, "events"))
    row = conn.execute(query, (ref, ref, run_id, tenant)).fetchone()
    named = None if row is None else row["named"]
    return None if named is None else bool(named)
