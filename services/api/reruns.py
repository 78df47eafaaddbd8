"""Re-runs from a step over the API (docs/rerun.md): `POST /v1/runs/{id}/rerun` and the links between a
run and its re-runs.

The origin's committed outputs and each live step's key and rendered-input ref are read from the
projection's events (step_committed and the first step_started of each step), so a re-run is built from
the same facts as the origin's timeline. Who may: the run's tenant or an operator; a run of another
tenant is a 404, like a run that does not exist.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from keel import intake, rerun, vocab
from keel.claimcheck import marker, ref_of_marker, ref_of_marker_text, store_json, too_large
from keel.contracts import RunRequested
from keel.idempotency import canonical_json, content_ref
from keel.workflows import InvalidInput, UnknownWorkflow, validate_input
from services.api import docs
from services.api.apikeys import Principal
from services.api.control import own_run
from services.api.deps import Deps, Writer, deps_of
from services.api.errors import ApiError
from services.api.runs import KEY_PATTERN
from services.api.submit import DeliveryFailed, new_run_id

router = APIRouter()
Conn = Any


class RerunBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    from_step: str = Field(min_length=1, max_length=128, description="the step to continue live from")
    patch: dict[str, Any] | None = Field(
        default=None, description="a JSON merge patch (RFC 7386) of the origin's run input"
    )


def _events(conn: Conn, schema: str, run_id: str, kind: str) -> list[dict[str, Any]]:
    """The run's plain-step facts of one kind, in log order (an agent step's sub-steps left out)."""
    query = sql.SQL(
        "SELECT step, attempt, idempotency_key, body FROM {} WHERE run_id = %s AND event = %s "
        'AND call IS NULL ORDER BY topic, "partition", "offset"'
    ).format(sql.Identifier(schema, "events"))
    return list(conn.execute(query, (run_id, kind)).fetchall())


def _output(deps: Deps, tenant: str, body: dict[str, Any]) -> Any:
    """A committed output as the request carries it: inline when small, else its claim check."""
    text, ref = body.get("output_json"), body.get("output_ref")
    if text is None:
        return marker(ref) if ref else None
    value = json.loads(text)
    if too_large(text, deps.settings.blob_threshold_bytes) or ref_of_marker(value) is not None:
        return marker(store_json(deps.publisher.blobs, tenant, text, ref))
    return value


def _input_ref(body: dict[str, Any]) -> str | None:
    """The content ref of a step's rendered input: the claim check's when it travelled by reference."""
    return ref_of_marker_text(body.get("input_json")) or body.get("input_ref")


def origin_input(deps: Deps, conn: Conn, run: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The origin's run input (read back from the blob store when it travelled by reference) and task."""
    found = _events(conn, deps.api.projection_schema, run["run_id"], "created")
    if not found:
        raise ApiError(409, "run_not_ready", f"run {run['run_id']} has no created fact in the projection yet")
    body = found[0]["body"]
    text = body.get("input_json")
    if text is None and body.get("input_ref"):
        text = deps.publisher.blobs.get(run["tenant_id"], body["input_ref"]).decode()
    value = json.loads(text or "{}")
    return (value if isinstance(value, dict) else {}), body.get("task_id")


def rerun_id_for(tenant: str, origin: str, idempotency_key: str) -> str:
    # FROZEN FORMAT: a client that retries a re-run with the same Idempotency-Key must name the same
    # re-run (the scheduler takes a repeated run id as a no-op). "rerun:" cannot begin a tenant slug,
    # so these never collide with the ids of POST /v1/runs.
    digest = hashlib.sha256(f"rerun:{tenant}\n{origin}\n{idempotency_key}".encode()).hexdigest()
    return "run-" + digest[:32]


def build(deps: Deps, who: Principal, run_id: str, body: RerunBody, key: str | None = None) -> dict[str, Any]:
    run = own_run(deps, who, run_id)
    if run["status"] not in vocab.TERMINAL_RUN_STATUSES:
        raise ApiError(409, "run_not_ended", f"run {run_id} is {run['status']}: only an ended run is re-run")
    try:
        spec = deps.catalog.get(run["workflow"], run["workflow_version"])
        live = rerun.at_or_after(spec, body.from_step)
    except UnknownWorkflow as exc:
        raise ApiError(404, "unknown_workflow", str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, "unknown_step", str(exc)) from None
    schema, tenant = deps.api.projection_schema, run["tenant_id"]
    with deps.pool.connection(tenant) as conn:
        run_input, task_id = origin_input(deps, conn, run)
        outputs: dict[str, Any] = {}
        for e in _events(conn, schema, run["run_id"], "step_committed"):
            outputs.setdefault(e["step"], _output(deps, tenant, e["body"]))
        started: dict[str, tuple[str | None, str | None]] = {}
        for e in _events(conn, schema, run["run_id"], "step_started"):
            started.setdefault(e["step"], (e["idempotency_key"], _input_ref(e["body"])))
    run_input = rerun.merge_patch(run_input, body.patch) if body.patch is not None else run_input
    problems = intake.input_problems(run_input)
    try:
        validate_input(spec, run_input)
    except InvalidInput as exc:
        problems.append(str(exc))
    if problems:
        raise ApiError(422, "invalid_input", "; ".join(problems))
    reused, keys = rerun.origin_fields(spec, body.from_step, outputs, started)
    new_id = rerun_id_for(tenant, run["run_id"], key) if key else new_run_id()
    request = RunRequested(
        request_id=f"{new_id}:request" if key else f"req-{uuid.uuid4().hex}",
        run_id=new_id,
        tenant_id=tenant,  # the origin's, whoever asks
        workflow=spec.name,
        workflow_version=spec.version,  # the origin's version: its steps and keys are the ones kept
        task_id=task_id,
        input_json=canonical_json(run_input),
        input_ref=content_ref(run_input),
        requested_at=datetime.now(UTC),
        requested_by=who.id,
        rerun_of=run["run_id"],
        from_step=body.from_step,
        reused_json=canonical_json(reused),
        origin_keys_json=canonical_json(keys),
    )
    try:
        deps.publisher.publish(request)
    except DeliveryFailed as exc:
        raise ApiError(503, "broker_unavailable", f"re-run request not accepted: {exc}; retry") from None
    return {
        "status": "accepted",
        "run_id": new_id,
        "keel_run_id": new_id,
        "rerun_of": run["run_id"],
        "from_step": body.from_step,
        "reused": sorted(reused),
        "live": [s.name for s in spec.steps if s.name in live],
    }


@router.post(
    "/v1/runs/{run_id}/rerun",
    status_code=202,
    response_model=None,
    responses=docs.errors(400, 401, 404, 409, 422, 503),
)
async def rerun_run(
    request: Request,
    run_id: str,
    who: Writer,
    body: RerunBody,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", min_length=1, max_length=intake.IDEMPOTENCY_KEY_MAX, pattern=KEY_PATTERN
        ),
    ] = None,
) -> JSONResponse:
    """A new run of the origin's workflow version that reuses the committed outputs of the steps before
    `from_step` (nothing is called for them) and continues live from it; a live step whose rendered
    input is unchanged keeps the origin's idempotency key, so an effect the origin committed is answered
    by the ledger. 202 with the new run's id; 409 while the origin has not ended. With an
    Idempotency-Key, a repeated request names the same re-run (the first one's body wins)."""
    found = await run_in_threadpool(build, deps_of(request), who, run_id, body, idempotency_key)
    return JSONResponse(found, status_code=202, headers={"Location": f"/v1/runs/{found['run_id']}"})
