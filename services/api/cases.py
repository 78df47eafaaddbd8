"""Cases over the API (docs/quarantine.md): list and read quarantine cases and approvals; decide a
quarantine case (operators); approve or deny an approval (the run's tenant's submitters, or operators);
tenants' viewers read their own cases.

A decision is checked here early (the case exists for this caller, is still open, an edited input or a
supplied output meets its schema), then sent as a `decide` control command to the run's scheduler, which
alone judges it against the run's state. The answer waits (briefly) for the projections to show what
became of it: 200 decided by this request, 409 decided by another or refused, 202 still pending.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from keel import vocab
from services.api import case_checks, case_queries, docs
from services.api.apikeys import Principal
from services.api.control import already_decided, await_decision, command, issue
from services.api.deps import Deps, OperatorPrincipal, Reader, Writer, deps_of
from services.api.errors import ApiError

router = APIRouter()
Status = Annotated[Literal["open", "decided", "all"], Query(description="open (default), decided or all")]
Kind = Annotated[Literal["quarantine", "approval"] | None, Query()]
TenantFilter = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
RunFilter = Annotated[str | None, Query(max_length=256, pattern=r"^[A-Za-z0-9._:-]+$")]
Limit = Annotated[int, Query(ge=1, le=500)]
MAX_CASE_ID = 1000
_READ = {**docs.ok(docs.CaseList), **docs.errors(400, 401, 503)}
_DECIDE = {
    **docs.ok(docs.Case),
    **docs.ok(docs.DecisionPending, 202),
    **docs.errors(400, 401, 403, 404, 409, 422, 503),
}


class Decide(BaseModel):
    """The body of POST /v1/quarantine/{case_id}/decide."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["retry", "edit", "skip", "fail"]
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    input: dict[str, Any] | None = Field(default=None, description="edit: the tool step's new input")
    output: Any = Field(default=None, description="skip: the step's output, as downstream steps see it")
    new_effect: bool | None = Field(
        default=None,
        description="edit: acknowledge that the edited input, sent under a new key, may make a second effect "
        "(required when the case's effect may already exist)",
    )

    @model_validator(mode="after")
    def _fits_decision(self) -> Decide:
        if (self.decision == vocab.EDIT) != (self.input is not None):
            raise ValueError("`input` is required with decision edit, and only with it")
        if (self.decision == vocab.SKIP) != ("output" in self.model_fields_set):
            raise ValueError("`output` is required with decision skip, and only with it")
        if self.new_effect is not None and self.decision != vocab.EDIT:
            raise ValueError("`new_effect` goes with decision edit only (a retry keeps its key)")
        return self


class Approve(BaseModel):
    """The body of POST /v1/approvals/{case_id}/approve: the payload approved, as the case shows it."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    input_ref: str = Field(min_length=1, max_length=200, description="the case's input_ref")
    idempotency_key: str = Field(min_length=1, max_length=1000, description="the case's idempotency_key")


class Deny(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


def _list(deps: Deps, who: Principal, tenant: str | None, **filters: Any) -> dict[str, Any]:
    if tenant is not None and not who.operator and tenant != who.tenant:
        return {"cases": []}  # a tenant sees its own cases only, whatever it filters on
    with deps.pool.connection(who.sees) as conn:
        found = case_queries.list_cases(conn, deps.api.projection_schema, who.tenant or tenant, **filters)
    return {"cases": found}


@router.get("/v1/quarantine", response_model=None, responses=_READ)
def list_quarantine(
    request: Request,
    who: Reader,
    status: Status = "open",
    kind: Kind = None,
    run_id: RunFilter = None,
    tenant: TenantFilter = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Cases, oldest first: open ones by default. A tenant's key sees its tenant's; an operator's every
    tenant's (or one: `tenant`)."""
    return _list(deps_of(request), who, tenant, status=status, kind=kind, run_id=run_id, limit=limit)


@router.get("/v1/approvals", response_model=None, responses=_READ)
def list_approvals(
    request: Request,
    who: Reader,
    tenant: TenantFilter = None,
    run_id: RunFilter = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Approvals waiting for a decision, oldest first, with what each would send (input_ref, key)."""
    deps = deps_of(request)
    return _list(deps, who, tenant, status="open", kind=vocab.CASE_APPROVAL, run_id=run_id, limit=limit)


def case_for(deps: Deps, who: Principal, case_id: str, kind: str | None = None) -> dict[str, Any]:
    case = None
    if "\x00" not in case_id and len(case_id) <= MAX_CASE_ID:  # no case has it (Postgres cannot compare NUL)
        with deps.pool.connection(who.sees) as conn:
            case = case_queries.get_case(conn, deps.api.projection_schema, who.tenant, case_id)
    if case is None or (kind is not None and case["kind"] != kind):
        # The same answer for a case of another tenant: nothing leaks.
        raise ApiError(404, "case_not_found", f"no {kind or 'case'} {case_id!r}")
    return case


@router.get(
    "/v1/quarantine/{case_id}",
    response_model=None,
    responses={**docs.ok(docs.Case), **docs.errors(401, 404, 503)},
)
def show_case(request: Request, case_id: str, who: Reader) -> dict[str, Any]:
    """A case: its reason and evidence (payload, response, error, key), the attempt history of its step,
    who opened it and when, and its decision once decided."""
    return case_for(deps_of(request), who, case_id)


def decide_case(
    deps: Deps, who: Principal, case_id: str, kind: str, decision: str, reason: str, **args: Any
) -> JSONResponse:
    case = case_for(deps, who, case_id, kind)
    if case["status"] == "decided":
        raise already_decided(case)
    run = {"run_id": case["run_id"], "tenant_id": case["tenant_id"]}
    cmd = command(run, who, "decide", reason, case["step"], case_id=case_id, decision=decision, **args)
    issue(deps, cmd)
    return await_decision(deps, case, cmd)


def quarantine_decision(deps: Deps, who: Principal, case_id: str, body: Decide) -> JSONResponse:
    case = case_for(deps, who, case_id, vocab.CASE_QUARANTINE)
    case_checks.check(deps, case, body.decision, body.input, body.output)
    args: dict[str, Any] = {}
    if body.decision == vocab.EDIT:
        args["input"] = body.input
    if body.decision == vocab.SKIP:
        args["output"] = body.output
    if body.new_effect is not None:
        args["new_effect"] = body.new_effect
    return decide_case(deps, who, case_id, vocab.CASE_QUARANTINE, body.decision, body.reason, **args)


@router.post("/v1/quarantine/{case_id}/decide", response_model=None, responses=_DECIDE)
async def decide(request: Request, case_id: str, who: OperatorPrincipal, body: Decide) -> JSONResponse:
    """Decide a quarantine case (operators): retry (same input, same key), edit (`input`, checked
    against the tool's input schema: 400 with the JSON path of each problem), skip (`output`, checked
    against the step's output schema), fail (the run ends failed). 409 when the case is decided
    already (by another request, even a concurrent one) or the scheduler refuses the decision."""
    return await run_in_threadpool(quarantine_decision, deps_of(request), who, case_id, body)


@router.post("/v1/approvals/{case_id}/approve", response_model=None, responses=_DECIDE)
async def approve(request: Request, case_id: str, who: Writer, body: Approve) -> JSONResponse:
    """Approve the exact payload and key the case shows (input_ref, idempotency_key): 409 when they are
    not the case's, so an approval for one payload can never release another."""
    return await run_in_threadpool(approve_case, deps_of(request), who, case_id, body)


def approve_case(deps: Deps, who: Principal, case_id: str, body: Approve) -> JSONResponse:
    case = case_for(deps, who, case_id, vocab.CASE_APPROVAL)
    shown = (case["input_ref"], case["idempotency_key"])
    if (body.input_ref, body.idempotency_key) != shown:
        raise ApiError(
            409,
            "payload_mismatch",
            f"case {case_id} asks to send input_ref {shown[0]!r} under key {shown[1]!r}; "
            "this approval names another payload or key",
        )
    bound = {"input_ref": body.input_ref, "idempotency_key": body.idempotency_key}
    return decide_case(deps, who, case_id, vocab.CASE_APPROVAL, vocab.APPROVE, body.reason, bound_to=bound)


@router.post("/v1/approvals/{case_id}/deny", response_model=None, responses=_DECIDE)
async def deny(request: Request, case_id: str, who: Writer, body: Deny) -> JSONResponse:
    """Deny an approval: the step does not act (its denial rule applies: fail, or its fallback)."""
    deps = deps_of(request)
    return await run_in_threadpool(
        decide_case, deps, who, case_id, vocab.CASE_APPROVAL, vocab.DENY, body.reason
    )
