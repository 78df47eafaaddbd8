"""Replay a step over the API: `POST /v1/runs/{run_id}/replay`, the twin of `keel replay` (docs/replay.md).

The run's recording is built here from what `keel record` reads (the projection's events in log order,
every payload they name from the tenant's blob store, the definitions the run ran with) and one step
attempt is re-executed from it in the sandbox of keel.replay: the adapters' and the executor's own
parsing code over the recorded answer, no HTTP client, no model router. An attempt whose answer was not
recorded is a 404 `not_recorded`, never a live call. A tool step is parsed with the tool's deployed
definition, or with the `tool_definition` in the body: a fix under review, checked against the incident
before it is deployed. The scheduler core's replay (`keel replay` prints it too) stays with the
operator tooling. Who may: anyone who may read the run (a replay changes nothing).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel import replay
from keel.blobs import BlobMissing, BlobStoreUnavailable, store_for
from keel.recording import Recording, RecordingError, record
from keel.tooldefs import ToolDefinition, ToolDefinitionError, parse_definition
from services.api import docs, queries
from services.api.deps import Deps, Viewer, deps_of
from services.api.errors import ApiError
from services.api.recordings import definitions_of
from services.api.runs import not_found, resolve

router = APIRouter()


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    step: str = Field(min_length=1, max_length=128, description="the step to replay")
    attempt: int | None = Field(default=None, ge=1, description="the attempt (default: the last)")
    call: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="an agent step's turn (turn-N) or tool call (turn-N.call-I)",
    )
    tool_definition: dict[str, Any] | None = Field(
        default=None,
        description="parse a tool attempt's answer with this definition (e.g. a fix under review) "
        "instead of the deployed one",
    )

    @field_validator("attempt", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        """JSON has one number type: 2.0 is the integer 2 (text is still refused)."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


def _recording(deps: Deps, tenant: str, events: list[dict[str, Any]]) -> Recording:
    store = store_for(deps.settings)

    def blob(ref: str) -> Any:
        try:
            return json.loads(store.get(tenant, ref))
        except BlobMissing as exc:
            raise ApiError(404, "blob_missing", str(exc)) from None
        except BlobStoreUnavailable as exc:
            raise ApiError(503, "blob_store_unavailable", str(exc)) from None

    defs = definitions_of(deps, events)
    return Recording(record(events, blob, defs["workflow"], defs["tools"]))


def _tool_of(rec: Recording, step: str, call: str | None) -> str | None:
    for e in rec.events:
        if e.step == step and e.call == call and e.tool is not None:
            return e.tool.tool
    return None


def _definition(body: ReplayBody) -> ToolDefinition | None:
    if body.tool_definition is None:
        return None
    try:
        return parse_definition(body.tool_definition, "tool_definition")
    except ToolDefinitionError as exc:
        raise ApiError(422, "invalid_definition", str(exc)) from None


@router.post(
    "/v1/runs/{run_id}/replay",
    response_model=None,
    responses={**docs.errors(400, 401, 404, 422, 503)},
)
def replay_step(request: Request, run_id: str, body: ReplayBody, tenant: Viewer) -> dict[str, Any]:
    """Re-execute one step attempt of the run from its recorded facts, with no network, and diff it."""
    return replay_attempt(deps_of(request), tenant, run_id, body)


def replay_attempt(deps: Deps, tenant: str, run_id: str, body: ReplayBody) -> dict[str, Any]:
    """The replay of `body`'s attempt of `tenant`'s run `run_id` (the API's answer, and the console's)."""
    with deps.pool.connection(tenant) as conn:
        keel_id, client_id = resolve(conn, tenant, run_id)
        found = queries.timeline(conn, deps.api.projection_schema, tenant, keel_id)
    if not found:
        raise not_found(run_id)
    definition = _definition(body)
    rec = _recording(deps, tenant, [e["body"] for e in found])
    tool = _tool_of(rec, body.step, body.call)
    try:
        if tool is None:
            if definition is not None:
                why = f"{body.step} made no tool call to parse with a definition"
                raise ApiError(422, "not_a_tool_step", why)
            result = replay.replay_model(rec, body.step, body.attempt, body.call)
        else:
            deployed = rec.tools.get(tool)
            result = replay.replay_tool(
                rec,
                body.step,
                definition or deployed,
                body.attempt,
                body.call,
                "the definition in the request" if definition else "the deployed definition",
            )
    except RecordingError as exc:
        raise ApiError(404, "not_recorded", str(exc)) from None
    return {
        "run_id": client_id or keel_id,
        "keel_run_id": keel_id,
        "step": result.step,
        "call": result.call,
        "attempt": result.attempt,
        "kind": result.kind,
        "input": result.input,
        "answer": result.answer,
        "recorded": result.recorded.as_dict(),
        "today": result.now.as_dict(),
        "parsed_with": result.parsed_with if result.kind == "tool" else None,
        "same": result.same,
        "diff": result.diff,
        "attempts": replay.attempts_of(rec, result.step, result.call),
        "network": "none: every answer above was read from the run's recorded facts",
    }
