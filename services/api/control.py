"""Control of runs over the API (docs/quarantine.md): cancel, pause and resume a run, and the one way
every control command leaves the API: a ControlCommand on keel.control keyed by run id, judged by the
run's scheduler against the run's own state.

Who may: the run's tenant (a submitter) or an operator. A run of another tenant is answered exactly like a
run that does not exist (404), so a tenant never learns another's run ids.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from keel import vocab
from keel.contracts import ControlCommand
from services.api import case_queries, docs, runs
from services.api.apikeys import Principal
from services.api.deps import Deps, Writer, deps_of
from services.api.errors import ApiError
from services.api.submit import DeliveryFailed

router = APIRouter()
POLL_S = 0.2  # how often a decision looks for its outcome in the projections


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="why (kept in the audit)")


def command(
    run: dict[str, Any], who: Principal, action: str, reason: str, step: str | None = None, **args: Any
) -> ControlCommand:
    return ControlCommand(
        command_id=f"cmd-{uuid.uuid4().hex}",
        run_id=run["run_id"],
        tenant_id=run["tenant_id"],  # the run's, whoever asks
        action=action,
        step=step,
        reason=reason,
        issued_by=who.id,
        issued_at=datetime.now(UTC),
        args_json=json.dumps(args, sort_keys=True, separators=(",", ":")) if args else None,
    )


def issue(deps: Deps, cmd: ControlCommand) -> None:
    """Produce `cmd` to the control topic, keyed by its run; 503 when the broker does not take it."""
    try:
        deps.publisher.send(deps.api.control_topic, cmd.run_id, cmd)
    except DeliveryFailed as exc:
        raise ApiError(503, "broker_unavailable", f"the command was not sent: {exc}; retry") from None


def await_decision(deps: Deps, case: dict[str, Any], cmd: ControlCommand) -> JSONResponse:
    """Wait (up to decision_wait_s) for the projections to show what became of decision `cmd`: 200 with
    the case decided by it, 409 when another decision got there first or the scheduler refused it,
    202 pending when neither is known yet (the decision may still apply: GET the case later)."""
    schema, deadline = deps.api.projection_schema, time.monotonic() + deps.api.decision_wait_s
    while True:
        with deps.pool.connection(case["tenant_id"]) as conn:
            now = case_queries.get_case(conn, schema, None, case["case_id"])
            refused = case_queries.refusal(conn, schema, cmd.run_id, cmd.command_id)
        if now is not None and now["status"] == "decided" and now["decision_command_id"] == cmd.command_id:
            return JSONResponse(now)
        if refused is not None:  # the scheduler's own reason, when it is known already
            raise ApiError(409, "decision_refused", f"the decision was refused: {refused}")
        if now is not None and now["status"] == "decided":
            raise already_decided(now)
        if time.monotonic() >= deadline:
            body = {"status": "pending", "command_id": cmd.command_id, "case_id": case["case_id"]}
            return JSONResponse(body, status_code=202)
        time.sleep(POLL_S)


def already_decided(case: dict[str, Any]) -> ApiError:
    return ApiError(
        409,
        "already_decided",
        f"case {case['case_id']} was decided already: {case['decision']} by {case['decided_by']}",
    )


def own_run(deps: Deps, who: Principal, run_id: str) -> dict[str, Any]:
    """The run `run_id` names for this caller (a tenant's own name for it, or Keel's id); 404 when
    there is none it may act on."""
    schema = deps.api.projection_schema
    if not runs.RUN_ID.match(run_id):
        raise runs.not_found(run_id)
    with deps.pool.connection(who.sees) as conn:
        keel_id = runs.resolve(conn, who.tenant, run_id)[0] if who.tenant else run_id
        run = case_queries.run_of(conn, schema, keel_id)
    if run is None or (who.tenant is not None and run["tenant_id"] != who.tenant):
        raise runs.not_found(run_id)
    return run


def control_run(deps: Deps, who: Principal, run_id: str, reason: str, action: str) -> dict[str, Any]:
    """Send `action` (cancel, pause, resume) for the caller's run: 404 for a run it may not act on, 409
    for one that has ended; the answer names the command on its way to the run's scheduler."""
    run = own_run(deps, who, run_id)
    if run["status"] in vocab.TERMINAL_RUN_STATUSES:
        raise ApiError(409, "run_ended", f"run {run_id} has ended ({run['status']}): nothing to {action}")
    cmd = command(run, who, action, reason)
    issue(deps, cmd)
    reply = {"status": "accepted", "action": action, "command_id": cmd.command_id, "run_id": run_id}
    return {**reply, "keel_run_id": run["run_id"]}


def _control(request: Request, run_id: str, who: Principal, body: Reason, action: str) -> JSONResponse:
    return JSONResponse(control_run(deps_of(request), who, run_id, body.reason, action), status_code=202)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    **docs.ok(docs.ControlAccepted, 202),
    **docs.errors(400, 401, 404, 409, 422, 503),
}


@router.post("/v1/runs/{run_id}/cancel", status_code=202, response_model=None, responses=_RESPONSES)
async def cancel(request: Request, run_id: str, who: Writer, body: Reason) -> JSONResponse:
    """Cancel a run: no new step starts; a call in flight settles first; then the run ends `canceled`.
    202: the command is on its way to the run's scheduler; 409 when the run has ended already."""
    return await run_in_threadpool(_control, request, run_id, who, body, "cancel")


@router.post("/v1/runs/{run_id}/pause", status_code=202, response_model=None, responses=_RESPONSES)
async def pause(request: Request, run_id: str, who: Writer, body: Reason) -> JSONResponse:
    """Pause a run: no new attempt starts and no retry timer fires until it is resumed."""
    return await run_in_threadpool(_control, request, run_id, who, body, "pause")


@router.post("/v1/runs/{run_id}/resume", status_code=202, response_model=None, responses=_RESPONSES)
async def resume(request: Request, run_id: str, who: Writer, body: Reason) -> JSONResponse:
    """Resume a paused run."""
    return await run_in_threadpool(_control, request, run_id, who, body, "resume")
