"""The console's runs: the list (filters, counts by status, search by run id, task id or idempotency
key), a run's page (its steps, its timeline with each retry's reason, its cases), its payloads, and the
actions its reader may take: cancel, replay a step, re-run from a step."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from keel import intake
from keel.workflows import UnknownWorkflow
from services.api import blobs, case_queries, claims, payload_refs, queries, rerun_links, reruns
from services.api.apikeys import Principal
from services.api.console import timeline
from services.api.console.session import form_body, posted, render, who
from services.api.control import control_run, own_run
from services.api.cost_query import BadCostQuery, instant_of
from services.api.deps import CONSOLE_PREFIX, Deps, deps_of
from services.api.errors import ApiError
from services.api.replays import ReplayBody, replay_attempt
from services.api.runs import STATUS_PATTERN

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
Text = Annotated[str | None, Query(max_length=256)]
Status = Annotated[str | None, Query(pattern=f"({STATUS_PATTERN})|^$")]
# A declared step the run has not reached: every field a started step has, none set.
NOT_STARTED: dict[str, Any] = {
    **dict.fromkeys(("idempotency_key", "external_id", "output", "cost_usd", "agent_id", "turns")),
    "status": "pending",
    "attempts": [],
}
FAILURE_CLASSES = ("transient", "rate_limited", "unknown_outcome", "validation", "auth", "budget")


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _filters(params: dict[str, str | None]) -> queries.RunFilter:
    try:
        given = params.get("min_cost")
        cost = float(given) if given else None
        if cost is not None and not math.isfinite(cost):
            raise ValueError(f"cost above must be a number of USD, not {given!r}")
        return queries.RunFilter(
            since=instant_of("since", params.get("since")),
            until=instant_of("until", params.get("until")),
            failure_class=params.get("failure_class"),
            min_cost_usd=cost,
            search=params.get("q"),
        )
    except (BadCostQuery, ValueError) as exc:
        raise ApiError(400, "invalid_filter", str(exc)) from None


def _runs(deps: Deps, found: Principal, params: dict[str, str | None], cursor: str | None) -> dict[str, Any]:
    tenant = found.tenant or params.get("tenant")  # an operator's filter, or a tenant's own
    narrow = _filters(params)
    with deps.pool.connection(found.sees) as conn:
        try:
            page, next_cursor = queries.list_runs(
                conn,
                deps.api.projection_schema,
                tenant,
                status=params.get("status"),
                workflow=params.get("workflow"),
                limit=50,
                cursor=cursor,
                narrow=narrow,
            )
        except queries.BadCursor as exc:
            raise ApiError(400, "invalid_cursor", str(exc)) from None
        counts = queries.status_counts(
            conn, deps.api.projection_schema, tenant, params.get("workflow"), narrow
        )
    return {"runs": [{"tenant_id": tenant, **r} for r in page], "next_cursor": next_cursor, "counts": counts}


def _list_filters(
    workflow: Annotated[str | None, Query(pattern=f"({intake.WORKFLOW_PATTERN})|^$")] = None,
    tenant: Annotated[str | None, Query(pattern=f"({intake.TENANT_PATTERN})|^$")] = None,
    since: Text = None,
    until: Text = None,
    failure_class: Annotated[str | None, Query(pattern=r"^[a-z_]{0,32}$")] = None,
    min_cost: Text = None,
    q: Text = None,
) -> dict[str, str | None]:
    """The list's filters as the form sent them (an empty field: no filter), for the page and its poll."""
    given = dict(workflow=workflow, tenant=tenant, since=since, until=until, failure_class=failure_class)
    return {k: _blank(v) for k, v in {**given, "min_cost": min_cost, "q": q}.items()}


ListFilters = Annotated[dict[str, str | None], Depends(_list_filters)]


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    filters: ListFilters,
    status: Status = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    found = who(request)
    params = {"status": _blank(status), **filters}
    listed = _runs(deps_of(request), found, params, cursor)
    if params["q"] and len(listed["runs"]) == 1:  # a search that names one run opens it
        return RedirectResponse(f"{CONSOLE_PREFIX}/runs/{listed['runs'][0]['run_id']}", status_code=303)
    shown = {k: v for k, v in params.items() if v}
    counted = urlencode({k: v for k, v in shown.items() if k != "status"})
    return render(
        request,
        "runs.html",
        who=found,
        filters=params,
        failure_classes=FAILURE_CLASSES,
        counts_url=f"{CONSOLE_PREFIX}/runs/counts?{counted}",
        next_url=f"?{urlencode({**shown, 'cursor': listed['next_cursor']})}"
        if listed["next_cursor"]
        else None,
        **listed,
    )


@router.get("/runs/counts")
def counts(request: Request, params: ListFilters) -> JSONResponse:
    """The counts by status of the list's filters, for the list page's poll."""
    found, deps = who(request), deps_of(request)
    scope = found.tenant or params["tenant"]
    with deps.pool.connection(found.sees) as conn:
        found_counts = queries.status_counts(
            conn, deps.api.projection_schema, scope, params["workflow"], _filters(params)
        )
    return JSONResponse({"counts": found_counts})


def _steps(deps: Deps, detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The workflow's steps in its order, each with its state in this run (`pending` before it starts)."""
    by_name = {s["step"]: s for s in detail["steps"]}
    try:
        spec = deps.catalog.get(detail["workflow"], detail["workflow_version"])
    except UnknownWorkflow:
        return list(detail["steps"])
    declared = [{**by_name.get(s.name, NOT_STARTED), "step": s.name, "kind": s.kind}
                for s in spec.steps]  # fmt: skip
    named = {s.name for s in spec.steps}
    return declared + [s for s in detail["steps"] if s["step"] not in named]


def load_run(deps: Deps, found: Principal, run_id: str) -> dict[str, Any]:
    """Everything a run's page shows; 404 for a run the caller may not see (another tenant's too)."""
    run = own_run(deps, found, run_id)
    keel_id, tenant, schema = run["run_id"], run["tenant_id"], deps.api.projection_schema
    with deps.pool.connection(found.sees) as conn:
        detail = queries.run_detail(conn, schema, tenant, keel_id)
        if detail is None:
            raise ApiError(404, "run_not_found", f"no run {run_id!r}")
        detail = {**detail, "keel_run_id": keel_id, **rerun_links.links(conn, schema, tenant, keel_id)}
        detail = payload_refs.with_claim_checks(conn, schema, tenant, detail)
        events = queries.timeline(conn, schema, tenant, keel_id)
        cases = case_queries.list_cases(conn, schema, tenant, status="all", run_id=keel_id)
        client_id = claims.client_run_ids(conn, tenant, [keel_id]).get(keel_id)
    return {
        "run": {**detail, "tenant_id": tenant, "client_run_id": client_id},
        "steps": _steps(deps, detail),
        "rows": timeline.rows(events),
        "cases": cases,
    }


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    found = who(request)
    loaded = load_run(deps_of(request), found, run_id)
    return render(
        request, "run.html", who=found, pretty=pretty, notice=request.query_params.get("notice"), **loaded
    )


@router.get("/runs/{run_id}/blobs/{ref}", response_class=HTMLResponse)
def blob_page(request: Request, run_id: str, ref: str) -> HTMLResponse:
    """A payload by its ref, shown as escaped text (the JSON route serves the same bytes)."""
    found, deps = who(request), deps_of(request)
    run = own_run(deps, found, run_id)
    raw = blobs.read(deps, run["tenant_id"], run["run_id"], ref)
    try:
        text = pretty(json.loads(raw))
    except ValueError:
        text = raw.decode("utf-8", errors="replace")
    return render(request, "blob.html", who=found, run_id=run_id, ref=ref, text=text)


def _back(run_id: str, notice: str) -> RedirectResponse:
    return RedirectResponse(
        f"{CONSOLE_PREFIX}/runs/{run_id}?{urlencode({'notice': notice})}", status_code=303
    )


def _reason(form: dict[str, str]) -> str:
    reason = form.get("reason", "").strip()
    if not reason:
        raise ApiError(400, "invalid_request", "a reason is required (it is kept in the audit)")
    return reason[:2000]


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> Response:
    found, form = await posted(request, "submitter")
    sent = await run_in_threadpool(control_run, deps_of(request), found, run_id, _reason(form), "cancel")
    return _back(
        run_id, f"cancel sent (command {sent['command_id']}): the run ends once a call in flight settles"
    )


@router.post("/runs/{run_id}/rerun")
async def rerun(request: Request, run_id: str) -> Response:
    found, form = await posted(request, "submitter")
    body = form_body(reruns.RerunBody, {"from_step": form.get("from_step", "")})
    made = await run_in_threadpool(reruns.build, deps_of(request), found, run_id, body)
    return _back(run_id, f"re-run {made['run_id']} accepted from step {body.from_step}")


@router.post("/runs/{run_id}/replay", response_class=HTMLResponse)
async def replay(request: Request, run_id: str) -> Response:
    """Replay one step attempt from the run's recorded facts (changes nothing, calls nobody)."""
    found, form = await posted(request, "viewer")
    deps = deps_of(request)
    try:
        attempt = int(form["attempt"]) if form.get("attempt") else None
        body = ReplayBody(step=form.get("step", ""), attempt=attempt, call=form.get("call") or None)
    except (ValidationError, ValueError) as exc:
        raise ApiError(400, "invalid_request", f"step, attempt and call: {exc}") from None
    run = await run_in_threadpool(own_run, deps, found, run_id)
    result = await run_in_threadpool(replay_attempt, deps, run["tenant_id"], run["run_id"], body)
    return render(request, "replay.html", who=found, run_id=run_id, result=result, pretty=pretty)
