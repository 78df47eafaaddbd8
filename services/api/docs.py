"""The shapes the API answers with, for /openapi.json: every error, and the success bodies.

They document; the routes return plain dicts. A fuzz test checks every answer against this document.
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from services.api.submit import RunSubmission


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


_WHY = {
    400: "a malformed parameter or header",
    401: "a missing, unknown, expired or revoked API key or token",
    403: "a valid key or token whose role (or tenant) may not do this",
    404: "no such resource for this caller",
    409: "a conflict with an earlier request",
    413: "the request body is too large",
    422: "the request body is not a valid request",
    503: "a dependency (database, broker) is not available; retry",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody, "description": _WHY[c]} for c in codes}


def ok(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model}}


class Accepted(BaseModel):
    run_id: str  # the client's run id when it chose one, else Keel's
    keel_run_id: str  # the run's id on the topics and in its events
    status: str


class RunSummary(BaseModel):
    run_id: str
    keel_run_id: str
    workflow: str
    workflow_version: int | None
    task_id: str | None
    status: str
    cost_usd: float
    created_at: str
    updated_at: str
    ended_at: str | None


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None


class RunDetail(RunSummary):
    input: dict[str, Any] | None
    output: Any
    error: str | None
    steps: list[dict[str, Any]]


class Timeline(BaseModel):
    run_id: str
    keel_run_id: str
    events: list[dict[str, Any]]


class Workflows(BaseModel):
    workflows: list[dict[str, Any]]


class Health(BaseModel):
    status: str
    checks: dict[str, str]
    error: ErrorDetail | None = None


class DeadLetters(BaseModel):
    dead_letters: list[dict[str, Any]]


class Redriven(BaseModel):
    redriven: list[dict[str, Any]]
    refused: list[dict[str, Any]] = []  # letters whose source topic the API's principal may not write


class ControlAccepted(BaseModel):
    status: str  # accepted: the command is on keel.control, on its way to the run's scheduler
    action: str
    command_id: str
    run_id: str
    keel_run_id: str


class CaseSummary(BaseModel):
    case_id: str
    tenant_id: str
    run_id: str
    workflow: str | None
    step: str | None
    call: str | None
    attempt: int | None
    kind: str  # quarantine | approval
    status: str  # open | decided
    reason: str | None
    failure_class: str | None
    idempotency_key: str | None
    input_ref: str | None
    opened_by: str | None
    opened_at: str | None
    deadline: str | None  # approvals: when the declared fallback applies
    decision: str | None
    decided_by: str | None
    decided_at: str | None


class CaseList(BaseModel):
    cases: list[CaseSummary]


class Case(CaseSummary):
    input: Any
    output_ref: str | None
    output: Any
    error: str | None
    decision_reason: str | None
    decision_command_id: str | None
    decision_key: str | None
    decision_json: dict[str, Any] | None
    attempts: list[dict[str, Any]]


class DecisionPending(BaseModel):
    status: str  # pending: sent, its outcome not projected yet; GET the case for it
    command_id: str
    case_id: str


SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": RunSubmission.model_json_schema()}},
    },
}


PUBLIC = {"/healthz"}


def _error_ref(code: int) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {"description": _WHY[code], "content": {"application/json": {"schema": schema}}}


def openapi(app: Any) -> dict[str, Any]:
    """FastAPI's document, less its default 422 for parameters: the API answers those with a 400."""
    if app.openapi_schema:
        return app.openapi_schema  # type: ignore[no-any-return]
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path, methods in doc["paths"].items():
        for op in methods.values():
            if path not in PUBLIC:  # every other route checks a role (docs/tenancy.md, section 1)
                for code in ("401", "403"):
                    op["responses"].setdefault(code, _error_ref(int(code)))
            default = op["responses"].get("422", {}).get("content", {}).get("application/json", {})
            if default.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del op["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        doc.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = doc
    return doc
