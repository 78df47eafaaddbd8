"""The API's routes: runs (submit, read, timeline, list), workflows and health, behind tenant API keys."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from keel import db
from keel.apikeys import ApiKeys
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.workflows import Catalog, InvalidInput, UnknownWorkflow, validate_input
from services.api import errors, operators, queries
from services.api.config import ApiSettings
from services.api.errors import ApiError
from services.api.pool import Pool
from services.api.submit import (
    IDEMPOTENCY_KEY_MAX,
    DeliveryFailed,
    Publisher,
    RunSubmission,
    new_run_id,
    run_id_for,
    run_request,
)

log = logging.getLogger(__name__)


@dataclass
class Deps:
    settings: Settings
    api: ApiSettings
    keys: ApiKeys
    catalog: Catalog
    pool: Pool
    publisher: Publisher


def tenant(request: Request) -> str:
    """The tenant of the request's bearer key; 401 without a valid one."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthenticated",
            "missing API key: send 'Authorization: Bearer <api key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    deps: Deps = request.app.state.deps
    found = deps.keys.tenant_for(key.strip())
    if found is None:
        raise ApiError(401, "unauthenticated", "invalid API key", {"WWW-Authenticate": "Bearer"})
    return found


Tenant = Annotated[str, Depends(tenant)]


def create_app(
    settings: Settings,
    api: ApiSettings | None = None,
    *,
    keys: ApiKeys | None = None,
    catalog: Catalog | None = None,
    publisher: Publisher | None = None,
) -> FastAPI:
    """The app; what is not passed in is built from the settings (tests pass fakes or their own topics)."""
    api = api or ApiSettings()
    if publisher is None:
        topic = api.run_requests_topic
        serde = Serde(registry_client(settings.schema_registry_url), {topic: "run_request"})
        publisher = Publisher(settings, topic, serde, api.delivery_timeout_s)
    keys = keys or ApiKeys.from_env()
    catalog = catalog or Catalog.configured()
    pool = Pool(lambda: db.database_url(settings, start=False), api.db_pool_size)
    deps = Deps(settings, api, keys, catalog, pool, publisher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        deps.publisher.close()
        deps.pool.close()

    app = FastAPI(title="Keel API", version="1", lifespan=lifespan)
    app.state.deps = deps
    errors.install(app)
    operators.install(app)
    schema = api.projection_schema

    @app.post("/v1/runs", status_code=202)
    async def submit(request: Request, tenant: Tenant) -> JSONResponse:
        body = parse_submission(await read_body(request, api.max_body_bytes))
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_MAX):
            raise ApiError(
                400, "invalid_idempotency_key", f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} chars"
            )
        run_id = await run_in_threadpool(accept, deps, schema, tenant, body, key)
        return JSONResponse(
            {"run_id": run_id, "status": "accepted"},
            status_code=202,
            headers={"Location": f"/v1/runs/{run_id}"},
        )

    @app.get("/v1/runs")
    def runs(
        tenant: Tenant,
        status: str | None = None,
        workflow: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        with deps.pool.connection() as conn:
            try:
                page, next_cursor = queries.list_runs(
                    conn, schema, tenant, status=status, workflow=workflow, limit=limit, cursor=cursor
                )
            except queries.BadCursor as exc:
                raise ApiError(400, "invalid_cursor", str(exc)) from None
        return {"runs": page, "next_cursor": next_cursor}

    @app.get("/v1/runs/{run_id}")
    def run(run_id: str, tenant: Tenant) -> dict[str, Any]:
        with deps.pool.connection() as conn:
            found = queries.run_detail(conn, schema, tenant, run_id)
        if found is None:
            raise not_found(run_id)
        return found

    @app.get("/v1/runs/{run_id}/events")
    def events(run_id: str, tenant: Tenant) -> dict[str, Any]:
        with deps.pool.connection() as conn:
            found = queries.timeline(conn, schema, tenant, run_id)
        if not found:
            raise not_found(run_id)
        return {"run_id": run_id, "events": found}

    @app.get("/v1/workflows")
    def workflows(_: Tenant) -> dict[str, Any]:
        cat = deps.catalog
        specs = [cat.get(name, v) for name in cat.names() for v in cat.versions(name)]
        return {"workflows": [spec.model_dump(mode="json", exclude_defaults=False) for spec in specs]}

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks = {"database": "ok", "broker": "ok"}
        try:
            with deps.pool.connection() as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            checks["database"] = f"unavailable: {exc}"
        try:
            deps.publisher.healthy(api.health_timeout_s)
        except Exception as exc:
            checks["broker"] = f"unavailable: {exc}"
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ok", "checks": checks})
        down = ", ".join(name for name, v in checks.items() if v != "ok")
        error = errors.error_body("unavailable", f"{down} not available")
        return JSONResponse({"status": "unavailable", "checks": checks, **error}, status_code=503)

    return app


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


def accept(deps: Deps, schema: str, tenant: str, body: RunSubmission, key: str | None) -> str:
    """Validate against the catalog, pick the run id, check ownership, publish; returns the run id."""
    try:
        spec = deps.catalog.get(body.workflow, body.workflow_version)
    except UnknownWorkflow as exc:
        raise ApiError(404, "unknown_workflow", str(exc)) from None
    try:
        validate_input(spec, body.input)
    except InvalidInput as exc:
        raise ApiError(422, "invalid_input", str(exc)) from None
    run_id = body.run_id or (run_id_for(tenant, key) if key else new_run_id())
    with deps.pool.connection() as conn:
        owner = queries.owner_of(conn, schema, run_id)
    if owner is not None and owner["tenant_id"] != tenant:
        raise ApiError(409, "run_id_conflict", f"run id {run_id!r} is not available; choose another")
    if owner is not None and (owner["workflow"] != spec.name or owner["input_json"] != body.input):
        what = "Idempotency-Key" if key and not body.run_id else "run_id"
        raise ApiError(
            409, "request_conflict", f"{what} was already used for a different request (run {run_id})"
        )
    try:
        deps.publisher.publish(run_request(tenant, run_id, body, spec.version, key))
    except DeliveryFailed as exc:
        raise ApiError(
            503, "broker_unavailable", f"run request not accepted: {exc}; retry with the same Idempotency-Key"
        ) from None
    log.info("accepted run %s of %s v%d for %s", run_id, spec.name, spec.version, tenant)
    return run_id
