"""HTTP shell of the registry: the REST subset Confluent's serializers and tools call."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.registry.core import RegistryError, RegistryState, check
from services.registry.store import KafkaStore

MEDIA = "application/vnd.schemaregistry.v1+json"


class Reply(JSONResponse):
    media_type = MEDIA


def _schema_body(body: dict[str, Any]) -> str:
    schema_type = body.get("schemaType", "AVRO") or "AVRO"
    if schema_type != "AVRO":
        raise RegistryError(422, 42201, f"Only AVRO schemas are supported, not {schema_type}")
    if body.get("references"):
        raise RegistryError(422, 42201, "Schema references are not supported")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema:
        raise RegistryError(422, 42201, "Request body needs a 'schema' string")
    return schema


def create_app(store: KafkaStore) -> FastAPI:
    app = FastAPI(title="Keel schema registry", default_response_class=Reply)
    state: RegistryState = store.state

    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> Reply:
        return Reply({"error_code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Reply:
        code = 40401 if exc.status_code == 404 else exc.status_code * 100
        return Reply({"error_code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/")
    def root() -> dict[str, Any]:
        return {}

    @app.get("/subjects")
    def subjects() -> list[str]:
        return sorted(state.subjects)

    @app.get("/subjects/{subject}/versions")
    def versions(subject: str) -> list[int]:
        return list(range(1, len(state.versions(subject)) + 1))

    @app.get("/subjects/{subject}/versions/{version}")
    def version(subject: str, version: str) -> dict[str, Any]:
        n, sid = state.version(subject, version)
        return {
            "subject": subject,
            "version": n,
            "id": sid,
            "schemaType": "AVRO",
            "schema": state.schemas[sid],
        }

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def version_schema(subject: str, version: str) -> Any:
        _, sid = state.version(subject, version)
        return JSONResponse(json.loads(state.schemas[sid]))

    @app.post("/subjects/{subject}/versions")
    def register(subject: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        schema = _schema_body(body)
        with store.lock:
            sid, record = state.plan_register(subject, schema)
            if record is not None:
                store.write(record)
        return {"id": sid}

    @app.post("/subjects/{subject}")
    def lookup(subject: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        n, sid = state.lookup(subject, _schema_body(body))
        return {
            "subject": subject,
            "version": n,
            "id": sid,
            "schemaType": "AVRO",
            "schema": state.schemas[sid],
        }

    @app.get("/schemas/ids/{sid}")
    def by_id(sid: int) -> dict[str, Any]:
        if sid not in state.schemas:
            raise RegistryError(404, 40403, f"Schema {sid} not found")
        return {"schema": state.schemas[sid], "schemaType": "AVRO"}

    @app.get("/schemas/ids/{sid}/versions")
    def id_versions(sid: int) -> list[dict[str, Any]]:
        return [
            {"subject": s, "version": ids.index(sid) + 1}
            for s, ids in sorted(state.subjects.items())
            if sid in ids
        ]

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    def compatibility(subject: str, version: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        schema = _schema_body(body)
        ids = state.versions(subject)
        n, _ = state.version(subject, version)
        level = state.level(subject)
        existing = (
            [state.schemas[i] for i in ids] if level.endswith("_TRANSITIVE") else [state.schemas[ids[n - 1]]]
        )
        problems = check(level, schema, existing)
        return {"is_compatible": not problems, "messages": problems}

    @app.get("/config")
    def get_global_config() -> dict[str, Any]:
        return {"compatibilityLevel": state.level(None)}

    @app.put("/config")
    def put_global_config(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return _set_level(None, body)

    @app.get("/config/{subject}")
    def get_config(subject: str) -> dict[str, Any]:
        return {"compatibilityLevel": state.level(subject)}

    @app.put("/config/{subject}")
    def put_config(subject: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return _set_level(subject, body)

    def _set_level(subject: str | None, body: dict[str, Any]) -> dict[str, Any]:
        level = str(body.get("compatibility", ""))
        with store.lock:
            store.write(state.plan_config(subject, level))
        return {"compatibility": level}

    return app
