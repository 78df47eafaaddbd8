"""The runs routes: submit (idempotent by key or client run id), list, read, timeline; per tenant.

Run ids. A run the client names (`run_id` in the body) runs under Keel's id derived from the tenant and
that name (`run_id_of_client`), so tenants never share a namespace; the API answers to both ids and
returns the client's as `run_id`, Keel's as `keel_run_id` (the id on the topics and in events). Runs
without a client name are known by Keel's id alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from keel import intake
from keel.idempotency import canonical_json
from keel.workflows import InvalidInput, UnknownWorkflow, validate_input
from services.api import claims, docs, errors, payload_refs, queries, rerun_links
from services.api.apikeys import Principal
from services.api.claims import Claim
from services.api.deps import Deps, TenantSubmitter, Viewer, deps_of
from services.api.errors import ApiError
from services.api.submit import (
    DeliveryFailed,
    RunSubmission,
    new_run_id,
    run_id_for,
    run_id_of_client,
    run_request,
)

log = logging.getLogger(__name__)
router = APIRouter()
RUN_ID = re.compile(intake.RUN_ID_PATTERN)
STATUS_PATTERN = r"^[a-z_]{1,32}$"
# Printable ASCII: a key is stored and compared as given, so nothing in it may be altered on the way.
KEY_PATTERN = r"^[ -~]+$"
# An agent step's sub-step: a turn (its facts and its tool calls') or one tool call of it.
CallFilter = Annotated[
    str | None,
    Query(
        pattern=r"^turn-[1-9][0-9]{0,5}(\.call-(0|[1-9][0-9]{0,5}))?$", description="turn-N or turn-N.call-I"
    ),
]


@router.post(
    "/v1/runs",
    status_code=202,
    response_model=None,
    openapi_extra=docs.SUBMIT_BODY,
    responses={**docs.ok(docs.Accepted, 202), **docs.errors(400, 401, 404, 409, 413, 422, 503)},
)
async def submit(
    request: Request,
    who: TenantSubmitter,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", min_length=1, max_length=intake.IDEMPOTENCY_KEY_MAX, pattern=KEY_PATTERN
        ),
    ] = None,
) -> JSONResponse:
    deps = deps_of(request)
    body = parse_submission(await read_body(request, deps.api.max_body_bytes))
    ids = await run_in_threadpool(accept, deps, who, body, idempotency_key)
    return JSONResponse(
        {"run_id": ids.run_id, "keel_run_id": ids.keel_run_id, "status": "accepted"},
        status_code=202,
        headers={"Location": f"/v1/runs/{ids.run_id}"},
    )


@router.get(
    "/v1/runs", response_model=None, responses={**docs.ok(docs.RunList), **docs.errors(400, 401, 503)}
)
def runs(
    request: Request,
    tenant: Viewer,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    workflow: Annotated[str | None, Query(pattern=intake.WORKFLOW_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    deps = deps_of(request)
    with deps.pool.connection(tenant) as conn:
        try:
            page, next_cursor = queries.list_runs(
                conn,
                deps.api.projection_schema,
                tenant,
                status=status,
                workflow=workflow,
                limit=limit,
                cursor=cursor,
            )
        except queries.BadCursor as exc:
            raise ApiError(400, "invalid_cursor", str(exc)) from None
        named = claims.client_run_ids(conn, tenant, [r["run_id"] for r in page])
    return {"runs": [_ids(r, named.get(r["run_id"])) for r in page], "next_cursor": next_cursor}


@router.get(
    "/v1/runs/{run_id}",
    response_model=None,
    responses={**docs.ok(docs.RunDetail), **docs.errors(401, 404, 503)},
)
def run(request: Request, run_id: str, tenant: Viewer) -> dict[str, Any]:
    deps = deps_of(request)
    with deps.pool.connection(tenant) as conn:
        keel_id, client_id = resolve(conn, tenant, run_id)
        found = queries.run_detail(conn, deps.api.projection_schema, tenant, keel_id)
        if found is None:
            raise not_found(run_id)
        linked = rerun_links.links(conn, deps.api.projection_schema, tenant, keel_id)
        detail = {**_ids(found, client_id), **linked}
        return payload_refs.with_claim_checks(conn, deps.api.projection_schema, tenant, detail)


@router.get(
    "/v1/runs/{run_id}/events",
    response_model=None,
    responses={**docs.ok(docs.Timeline), **docs.errors(400, 401, 404, 503)},
)
def events(request: Request, run_id: str, tenant: Viewer, call: CallFilter = None) -> dict[str, Any]:
    deps = deps_of(request)
    with deps.pool.connection(tenant) as conn:
        keel_id, client_id = resolve(conn, tenant, run_id)
        found = queries.timeline(conn, deps.api.projection_schema, tenant, keel_id, call)
    if not found:
        raise not_found(run_id)
    return {"run_id": client_id or keel_id, "keel_run_id": keel_id, "events": found}


def resolve(conn: claims.Conn, tenant: str, run_id: str) -> tuple[str, str | None]:
    """(Keel's run id, the client's) for an id in a path: the tenant's own name for a run, or Keel's."""
    if not RUN_ID.match(run_id):
        raise not_found(run_id)  # no run can have it (and Postgres could not even compare it: NUL)
    keel_id = claims.keel_run_id(conn, tenant, run_id)
    if keel_id is not None:
        return keel_id, run_id
    return run_id, claims.client_run_ids(conn, tenant, [run_id]).get(run_id)


def _ids(row: dict[str, Any], client_id: str | None) -> dict[str, Any]:
    keel_id = row.pop("run_id")
    return {"run_id": client_id or keel_id, "keel_run_id": keel_id, **row}


def not_found(run_id: str) -> ApiError:
    # The same answer for a run that does not exist and one of another tenant: nothing leaks.
    return ApiError(
        404, "run_not_found", f"no run {run_id!r} (a run accepted moments ago appears once it is created)"
    )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"request body is larger than {limit} bytes")
    return bytes(body)


def parse_submission(raw: bytes) -> RunSubmission:
    try:
        return RunSubmission.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", errors.describe(list(exc.errors()))) from None  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunIds:
    run_id: str  # the client's, when it named the run; else Keel's
    keel_run_id: str  # the run's id on the topics


def accept(deps: Deps, who: Principal, body: RunSubmission, key: str | None) -> RunIds:
    """Validate, claim the request's key and run id, publish (the run request names `who`)."""
    tenant = str(who.tenant)
    try:
        spec = deps.catalog.get(body.workflow, body.workflow_version)
    except UnknownWorkflow as exc:
        raise ApiError(404, "unknown_workflow", str(exc)) from None
    problems = intake.input_problems(body.input)  # the scheduler's rules: NaN, Infinity, NUL
    if problems:
        raise ApiError(422, "invalid_input", "; ".join(problems))
    size = len(canonical_json(body.input).encode())
    if size > intake.MAX_INPUT_BYTES:  # above the blob threshold, it is published by reference
        raise ApiError(
            413, "payload_too_large", f"the run input is {size} bytes; at most {intake.MAX_INPUT_BYTES}"
        )
    try:
        validate_input(spec, body.input)
    except InvalidInput as exc:
        raise ApiError(422, "invalid_input", str(exc)) from None

    named: list[Claim] = []  # run id first, then the key: one lock order for every request
    if body.run_id:
        named.append(Claim(claims.RUN_ID, body.run_id))
        run_id = run_id_of_client(tenant, body.run_id)
    else:
        run_id = run_id_for(tenant, key) if key else new_run_id()
    if key:
        named.append(Claim(claims.IDEMPOTENCY_KEY, key))
    version, published = spec.version, False
    if named:
        claim = claims.Request(tenant, named, run_id, body.fingerprint(), spec.name, spec.version)
        with deps.pool.connection(tenant) as conn:
            try:
                decision = claims.claim(conn, claim)
            except claims.Conflict as exc:
                what = "Idempotency-Key" if exc.claim.kind == claims.IDEMPOTENCY_KEY else "run_id"
                raise ApiError(
                    409, "request_conflict", f"{what} was already used for a different request"
                ) from None
        version, published = decision.workflow_version, decision.published
    if not published:
        publish(deps, who, run_id, body, version, key, named)
    log.info("accepted run %s of %s v%d for %s", run_id, spec.name, version, tenant)
    return RunIds(body.run_id or run_id, run_id)


def publish(
    deps: Deps,
    who: Principal,
    run_id: str,
    body: RunSubmission,
    version: int,
    key: str | None,
    named: list[Claim],
) -> None:
    tenant = str(who.tenant)
    try:
        request = run_request(tenant, run_id, body, version, bool(named), requested_by=who.id)
        deps.publisher.publish(request)
    except DeliveryFailed as exc:
        if key or body.run_id:
            again = "the same Idempotency-Key" if key else "the same run_id"
            raise ApiError(
                503, "broker_unavailable", f"run request not accepted: {exc}; retry with {again}"
            ) from None
        # The broker may have written it after all: without a name for the request, a retry cannot be
        # told from a new request.
        raise ApiError(
            503,
            "broker_unavailable",
            f"the run request may not have been accepted ({exc}). It had no Idempotency-Key, so retrying "
            "it may start a second run: send an Idempotency-Key (or a run_id) so that a retry is safe",
        ) from None
    if named:
        try:
            with deps.pool.connection(tenant) as conn:
                claims.mark_published(conn, tenant, named)
        except psycopg.Error as exc:  # only an optimisation: a retry then publishes again, a no-op
            log.warning("run %s published, not marked as published: %s", run_id, exc)
