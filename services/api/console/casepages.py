"""The console's quarantine queue and approvals: open cases with their evidence, and the decision forms
(retry, edit-and-retry, skip with output, fail; approve, deny), each with its reason, checked and sent by
the same code as POST /v1/quarantine/{id}/decide and the approvals' routes."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from keel import intake, vocab
from services.api import case_queries, cases
from services.api.apikeys import Principal
from services.api.console.runpages import pretty
from services.api.console.session import form_body, posted, render, who
from services.api.deps import CONSOLE_PREFIX, Deps, deps_of
from services.api.errors import ApiError

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
DECISIONS = (vocab.RETRY, vocab.EDIT, vocab.SKIP, vocab.FAIL)


def _queue(deps: Deps, found: Principal, tenant: str | None, status: str) -> list[dict[str, Any]]:
    with deps.pool.connection(found.sees) as conn:
        return case_queries.list_cases(
            conn, deps.api.projection_schema, found.tenant or tenant, status=status, limit=200
        )


@router.get("/cases", response_class=HTMLResponse)
def queue(
    request: Request,
    status: Annotated[str, Query(pattern=r"^(open|decided|all)$")] = "open",
    tenant: Annotated[str | None, Query(pattern=f"({intake.TENANT_PATTERN})|^$")] = None,
) -> HTMLResponse:
    found = who(request)
    listed = _queue(deps_of(request), found, tenant or None, status)
    quarantine = [c for c in listed if c["kind"] == vocab.CASE_QUARANTINE]
    approvals = [c for c in listed if c["kind"] == vocab.CASE_APPROVAL]
    return render(
        request, "cases.html", who=found, status=status, tenant=tenant or "", quarantine=quarantine,
        approvals=approvals,
    )  # fmt: skip


def _case_page(
    request: Request, found: Principal, case_id: str, code: int = 200, **form: Any
) -> HTMLResponse:
    case = cases.case_for(deps_of(request), found, case_id)
    shown = {
        "decision": "",
        "reason": "",
        "input": pretty(case["input"]) if case["input"] else "",
        "output": "",
    }
    return render(
        request, "case.html", code, who=found, case=case, pretty=pretty, decisions=DECISIONS,
        form={**shown, **form}, error=form.get("error"),
    )  # fmt: skip


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, case_id: str) -> HTMLResponse:
    return _case_page(request, who(request), case_id)


def _json_field(form: dict[str, str], name: str) -> Any:
    try:
        return json.loads(form.get(name, ""))
    except ValueError as exc:
        raise ApiError(400, f"invalid_{name}", f"the {name} is not JSON: {exc}") from None


def _decided(case: dict[str, Any], reply: Response) -> Response:
    """Back to the run, whose timeline shows the decision (or says it is still on its way)."""
    said = "decided" if reply.status_code == 200 else "decision sent (still being applied)"
    notice = f"case {case['case_id']}: {said}"
    query = urlencode({"notice": notice})
    return RedirectResponse(f"{CONSOLE_PREFIX}/runs/{case['run_id']}?{query}#cases", status_code=303)


def _redisplay(
    request: Request, found: Principal, case_id: str, form: dict[str, str], exc: ApiError
) -> Response:
    kept = {k: form.get(k, "") for k in ("decision", "reason", "input", "output")}
    return _case_page(request, found, case_id, exc.status, error=exc.message, **kept)


@router.post("/cases/{case_id}/decide")
async def decide(request: Request, case_id: str) -> Response:
    """A quarantine decision (operators): the edited input or the supplied output is checked against its
    schema by the JSON route's own code; a refusal shows on the form, with what was typed kept."""
    found, form = await posted(request, "operator")
    deps = deps_of(request)
    try:
        decision = form.get("decision", "")
        fields: dict[str, Any] = {"decision": decision, "reason": form.get("reason", "")}
        if decision == vocab.EDIT:
            fields["input"] = _json_field(form, "input")
        if decision == vocab.SKIP:
            fields["output"] = _json_field(form, "output")
        if form.get("new_effect") and decision == vocab.EDIT:
            fields["new_effect"] = True
        body = form_body(cases.Decide, fields)
        case = await run_in_threadpool(cases.case_for, deps, found, case_id)
        reply = await run_in_threadpool(cases.quarantine_decision, deps, found, case_id, body)
    except ApiError as exc:
        if exc.status in (400, 409, 422):
            return await run_in_threadpool(_redisplay, request, found, case_id, form, exc)
        raise
    return _decided(case, reply)


@router.post("/cases/{case_id}/approve")
async def approve(request: Request, case_id: str) -> Response:
    """Approve the exact payload and key the page showed (a changed case is refused: 409)."""
    found, form = await posted(request, "submitter")
    deps = deps_of(request)
    body = form_body(cases.Approve, {k: form.get(k, "") for k in ("reason", "input_ref", "idempotency_key")})
    case = await run_in_threadpool(cases.case_for, deps, found, case_id)
    reply = await run_in_threadpool(cases.approve_case, deps, found, case_id, body)
    return _decided(case, reply)


@router.post("/cases/{case_id}/deny")
async def deny(request: Request, case_id: str) -> Response:
    found, form = await posted(request, "submitter")
    deps = deps_of(request)
    body = form_body(cases.Deny, {"reason": form.get("reason", "")})
    case = await run_in_threadpool(cases.case_for, deps, found, case_id)
    args = (deps, found, case_id, vocab.CASE_APPROVAL, vocab.DENY, body.reason)
    reply = await run_in_threadpool(cases.decide_case, *args)
    return _decided(case, reply)
