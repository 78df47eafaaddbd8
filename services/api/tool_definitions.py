"""Tools registered at runtime: apply one (admins), list the versions of one (any role)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keel.definitions.tools import tool_digest
from services.api import docs
from services.api.definitions import Registered, Versions, apply_definition, provenance
from services.api.deps import Admin, Deps, Reader, deps_of
from services.api.errors import ApiError

router = APIRouter(prefix="/v1/tools")


@router.post(
    "",
    response_model=None,
    status_code=201,
    responses={**docs.ok(Registered, 201), **docs.ok(Registered), **docs.errors(401, 403, 409, 413, 422)},
)
async def apply_tool(request: Request, who: Admin) -> JSONResponse:
    """Validate a tool definition (YAML or JSON body, as tools/*.yaml) and register it: 201 when new,
    200 when the same content is registered already, 409 when other content holds that version (or a
    tool file of this service defines it), 422 with the JSON path and line of every problem."""
    return await apply_definition(request, who, "tool", _file_digest)


def _file_digest(deps: Deps, name: str, version: int) -> str | None:
    files = deps.tools.files
    tool = f"{name}@{version}"
    return tool_digest(files.get(tool)) if tool in files else None


@router.get("/{name}/versions", response_model=None, responses={**docs.ok(Versions), **docs.errors(401, 404)})
def tool_versions(request: Request, name: str, _: Reader) -> dict[str, Any]:
    """Every version of a tool this deployment knows, with its digest and where it comes from."""
    tools = deps_of(request).tools
    found = [t for t in tools.names() if t.partition("@")[0] == name]
    if not found and tools.reader is not None and tools.reader.refresh(tools.wait_s):
        found = [t for t in tools.names() if t.partition("@")[0] == name]
    if not found:
        raise ApiError(404, "unknown_tool", f"unknown tool {name!r}; known tools: {tools.names()}")
    out = []
    for tool in sorted(found, key=lambda t: int(t.partition("@")[2])):
        loaded, record = tools.loaded(tool), tools.record(tool)
        entry: dict[str, Any] = {
            "version": loaded.definition.version,
            "digest": tool_digest(loaded.definition),
            "description": loaded.definition.description,
            "idempotency": loaded.definition.idempotency.mode,
        }
        out.append({**entry, **provenance(record)})
    return {"name": name, "versions": out}
