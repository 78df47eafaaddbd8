"""Workflows registered at runtime: apply one (admins), list the versions of one (any role). The apply
route is shared by every kind of definition (see services.api.tool_definitions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from keel.definitions import log as definitions_log
from keel.definitions.kinds import parse
from keel.definitions.problems import DefinitionInvalid, load_text
from keel.definitions.view import spec_digest
from keel.workflows import UnknownWorkflow
from services.api import docs
from services.api.deps import Admin, Deps, Reader, deps_of
from services.api.errors import ApiError, error_body

router = APIRouter(prefix="/v1/workflows")


class Registered(BaseModel):
    name: str
    version: int
    digest: str  # sha256:<hex> of the canonical JSON of the definition
    outcome: str  # created | unchanged


class Versions(BaseModel):
    name: str
    versions: list[dict[str, Any]]


MAX_DEFINITION_BYTES = 1024 * 1024  # a workflow is a graph of steps, never a payload
SOURCE = "request body"


@router.post(
    "",
    response_model=None,
    status_code=201,
    responses={**docs.ok(Registered, 201), **docs.ok(Registered), **docs.errors(401, 403, 409, 413, 422)},
)
async def apply_workflow(request: Request, who: Admin) -> JSONResponse:
    """Validate a workflow (YAML or JSON body) and register it: 201 with its digest when new, 200 when
    the same content is registered already, 409 when other content holds that version, 422 (with the
    JSON path and line of every problem) when it is invalid. Nothing invalid reaches the topic."""
    return await apply_definition(request, who, "workflow", _known_digest)


KnownDigest = Callable[[Deps, str, int], str | None]


async def apply_definition(request: Request, who: str, kind: str, known: KnownDigest) -> JSONResponse:
    """Register one definition of `kind` from the body; `known` gives the digest a file of this service
    holds for name@version (None: no file), so a file's version cannot be registered with other content."""
    raw = await request.body()
    if len(raw) > MAX_DEFINITION_BYTES:
        raise ApiError(413, "payload_too_large", f"a definition is at most {MAX_DEFINITION_BYTES} bytes")
    try:
        return await run_in_threadpool(_apply, deps_of(request), raw.decode("utf-8"), who, kind, known)
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_definition", "the body is not UTF-8 text") from None
    except DefinitionInvalid as exc:
        body = error_body("invalid_definition", str(exc))
        body["error"]["problems"] = [p.as_dict() for p in exc.problems]  # type: ignore[assignment]
        return JSONResponse(body, status_code=422)


def _apply(deps: Deps, text: str, who: str, kind: str, known_digest: KnownDigest) -> JSONResponse:
    data, lines = load_text(text, SOURCE)
    parsed = parse(kind, data, SOURCE, lines)
    known = known_digest(deps, parsed.name, parsed.version)
    if known is not None and known != parsed.digest:
        raise _conflict(kind, parsed.name, parsed.version, known)
    applied = definitions_log.apply(
        deps.settings,
        kind,
        data,
        source=SOURCE,
        applied_by=who,
        lines=lines,
        topic=deps.api.definitions_topic,
    )
    if not applied.accepted:
        assert applied.winner is not None
        raise _conflict(kind, parsed.name, parsed.version, applied.winner.digest)
    body = {
        "name": parsed.name,
        "version": parsed.version,
        "digest": parsed.digest,
        "outcome": applied.outcome,
    }
    return JSONResponse(body, status_code=201 if applied.outcome == "created" else 200)


def _known_digest(deps: Deps, name: str, version: int) -> str | None:
    if version not in deps.catalog.versions(name):
        return None
    return spec_digest(deps.catalog.get(name, version))


def _conflict(kind: str, name: str, version: int, digest: str) -> ApiError:
    return ApiError(
        409,
        "definition_conflict",
        f"{kind} {name} version {version} is registered with other content ({digest}); "
        "a version never changes: apply it as a new version",
    )


@router.get("/{name}/versions", response_model=None, responses={**docs.ok(Versions), **docs.errors(401, 404)})
def workflow_versions(request: Request, name: str, _: Reader) -> dict[str, Any]:
    """Every version of a workflow this service can run, with its digest and where it comes from."""
    deps = deps_of(request)
    try:
        deps.catalog.get(name)
    except UnknownWorkflow as exc:
        raise ApiError(404, "unknown_workflow", str(exc)) from None
    out = []
    for version in deps.catalog.versions(name):
        spec = deps.catalog.get(name, version)
        record = getattr(deps.catalog, "record", lambda *_: None)(name, version)
        entry: dict[str, Any] = {
            "version": version,
            "digest": spec_digest(spec),
            "description": spec.description,
        }
        out.append({**entry, **provenance(record)})
    return {"name": name, "versions": out}


def provenance(record: Any) -> dict[str, Any]:
    """Where a version comes from: a registered record (who applied it, when) or a file."""
    if record is None:
        return {"source": "file"}
    return {"source": "registered", "applied_by": record.applied_by, "applied_at_ms": record.applied_at_ms}
