"""Every error the API returns has one shape: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

log = logging.getLogger(__name__)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def reply(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def describe(errors: list[dict[str, object]]) -> str:
    """Pydantic's errors as one line a client can act on: `field 'x': problem; ...`."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]  # type: ignore[attr-defined]
        parts.append(f"field {'.'.join(loc)!r}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at the request's path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.scope["path"]):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return reply(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return reply(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = list(exc.errors())
        if any(e.get("loc", ("body",))[0] == "body" for e in problems):
            return reply(422, "invalid_request", describe(problems))
        return reply(400, "invalid_parameter", describe(problems))  # a path, query or header parameter

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(_: Request, exc: psycopg.Error) -> JSONResponse:
        log.warning("database error: %s", exc)
        return reply(503, "database_unavailable", "the run database is not available; try again shortly")

    @app.exception_handler(psycopg.InterfaceError)
    async def database_gone(request: Request, exc: psycopg.Error) -> JSONResponse:
        return await database_unavailable(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return reply(500, "internal_error", "internal error; it has been logged")
