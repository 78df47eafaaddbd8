"""What a run ran with: `GET /v1/runs/{run_id}/definitions` gives the workflow version and the tool
definitions of a run, in full, for its recording (`keel record`, docs/replay.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from keel.tooldefs import UnknownTool
from keel.workflows.catalog import UnknownWorkflow
from services.api import docs, queries
from services.api.deps import Deps, Viewer, deps_of
from services.api.errors import ApiError
from services.api.runs import not_found, resolve

router = APIRouter()


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


@router.get("/v1/runs/{run_id}/definitions", response_model=None, responses={**docs.errors(401, 404, 503)})
def definitions(request: Request, run_id: str, tenant: Viewer) -> dict[str, Any]:
    """The run's workflow version and every tool its steps name or its calls used, as definitions."""
    deps = deps_of(request)
    with deps.pool.connection(tenant) as conn:
        keel_id, _ = resolve(conn, tenant, run_id)
        found = queries.timeline(conn, deps.api.projection_schema, tenant, keel_id)
    if not found:
        raise not_found(run_id)
    return definitions_of(deps, [e["body"] for e in found])


def definitions_of(deps: Deps, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The workflow version the run's first event names, and the tools its steps and calls used."""
    first = events[0]
    try:
        spec = deps.catalog.get(first["workflow"], first.get("workflow_version"))
    except UnknownWorkflow as exc:
        raise ApiError(404, "unknown_workflow", str(exc)) from None
    named = {s.tool for s in spec.steps if getattr(s, "tool", None)}
    for s in spec.steps:
        named.update(getattr(s, "tools", None) or [])
    named.update(((e.get("tool") or {}).get("tool")) for e in events)
    tools: dict[str, Any] = {}
    for tool in sorted(t for t in named if t):
        try:
            tools[tool] = _dump(deps.tools.get(tool))
        except UnknownTool:
            continue  # a tool no longer known: the recording says so by its absence
    return {"workflow": _dump(spec), "tools": tools}
