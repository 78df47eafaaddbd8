"""The API: runs (submit, read, timeline, list, cancel, pause, resume), workflows, cases and approvals
and health; each route for the least role it needs (docs/tenancy.md, section 1): tenants' viewers and
submitters, operators (dead letters, decisions, approvals), admins (definitions)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from keel import db
from keel.definitions.tools import ToolView
from keel.definitions.view import live_workflows
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.tooldefs import ToolRegistry
from services.api import (
    audit,
    blobs,
    cases,
    console,
    control,
    costs,
    definitions,
    docs,
    errors,
    metrics,
    operators,
    recordings,
    replays,
    reruns,
    runs,
    tool_definitions,
)
from services.api.auth import Authenticator
from services.api.config import ApiSettings
from services.api.deps import Deps, Reader, Workflows, deps_of
from services.api.pool import EVERY_TENANT, Pool
from services.api.submit import Publisher

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    api: ApiSettings | None = None,
    *,
    auth: Authenticator | None = None,
    catalog: Workflows | None = None,
    publisher: Publisher | None = None,
) -> FastAPI:
    """The app; what is not passed in is built from the settings (tests pass fakes or their own topics)."""
    api = api or ApiSettings()
    if publisher is None:
        topic = api.run_requests_topic
        envelopes = {topic: "run_request", api.control_topic: "control_command"}
        serde = Serde(registry_client(settings.schema_registry_url), envelopes)
        publisher = Publisher(settings, topic, serde, api.delivery_timeout_s)
    # Credentials first: a malformed configuration, or none outside KEEL_ENV=dev, stops the start here.
    auth = auth or Authenticator.from_env()
    # The workflow files plus the registered definitions, followed in the background.
    catalog = catalog or live_workflows(settings, api.definitions_topic)
    pool = Pool(lambda: db.database_url(settings, start=False), api.db_pool_size)
    # The tool files plus the registered tools, following the topic with the workflows' reader.
    tools = ToolView(ToolRegistry.configured(), getattr(catalog, "reader", None))
    deps = Deps(settings, api, auth, catalog, pool, publisher, tools)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        deps.publisher.close()
        deps.pool.close()
        operators.close(app)
        if close := getattr(deps.catalog, "close", None):
            close()

    app = FastAPI(title="Keel API", version="1", lifespan=lifespan)
    app.state.deps = deps
    app.openapi = lambda: docs.openapi(app)  # type: ignore[method-assign]
    errors.install(app)
    app.include_router(runs.router)
    app.include_router(blobs.router)
    app.include_router(recordings.router)
    app.include_router(replays.router)
    app.include_router(definitions.router)
    app.include_router(tool_definitions.router)
    app.include_router(costs.router)
    app.include_router(cases.router)
    app.include_router(control.router)
    app.include_router(reruns.router)
    app.include_router(audit.router)
    operators.install(app)
    console.install(app)
    metrics.install(app, deps)

    @app.get("/v1/workflows", response_model=None, responses={**docs.ok(docs.Workflows), **docs.errors(401)})
    def workflows(_: Reader) -> dict[str, Any]:
        cat = deps.catalog
        specs = [cat.get(name, v) for name in cat.names() for v in cat.versions(name)]
        return {"workflows": [spec.model_dump(mode="json", exclude_defaults=False) for spec in specs]}

    @app.get("/healthz", response_model=None, responses={**docs.ok(docs.Health), 503: {"model": docs.Health}})
    def healthz(request: Request) -> JSONResponse:
        return health(deps_of(request))

    return app


def health(deps: Deps) -> JSONResponse:
    """ok or unavailable per check, nothing more: the detail (hosts, users) is for the log only."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with deps.pool.connection(EVERY_TENANT) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        log.warning("health: the database is not available: %s", exc)
        checks["database"] = "unavailable"
    try:
        deps.publisher.healthy(deps.api.health_timeout_s)
    except Exception as exc:
        log.warning("health: the broker is not available: %s", exc)
        checks["broker"] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    down = ", ".join(name for name, v in checks.items() if v != "ok")
    error = errors.error_body("unavailable", f"{down} not available")
    return JSONResponse({"status": "unavailable", "checks": checks, **error}, status_code=503)
