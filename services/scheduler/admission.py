"""Admission of a run request on `keel.run-requests`: every field checked before anything is spent.

The identifying fields and the input follow `keel.intake`, the rules the API applies, so a request
published straight to the topic is held to what `POST /v1/runs` enforces. The few fields the API fills
in itself (request id, trace id, who asked, the input's content ref) are checked here.
"""

from __future__ import annotations

from typing import Any

from keel import intake
from keel.contracts import RunRequested
from keel.idempotency import content_ref
from keel.workflows import InvalidInput, WorkflowSpec, validate_input

# Free-text identifiers copied into every event of the run: bounded, and never a NUL (Postgres refuses it).
MAX_LABEL = 256


class Rejected(Exception):  # noqa: N818 - a verdict on a message
    """The message cannot start a run (unknown workflow, invalid input): it belongs in dead letters."""

    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self.reason, self.error_class = reason, error_class


def _label_problem(name: str, value: str | None, required: bool = False) -> str | None:
    if value is None or value == "":
        return f"{name} must not be empty" if required else None
    if len(value) > MAX_LABEL or "\x00" in value:
        return f"{name} must be at most {MAX_LABEL} characters without NUL"
    return None


def check_fields(req: RunRequested) -> None:
    """Raise Rejected ("invalid_request") listing every identifying field that breaks a rule."""
    problems = intake.request_problems(
        run_id=req.run_id, tenant_id=req.tenant_id, workflow=req.workflow, task_id=req.task_id
    )
    problems += [
        p
        for p in (
            _label_problem("request_id", req.request_id, required=True),
            _label_problem("requested_by", req.requested_by),
            _label_problem("trace_id", req.trace_id),
        )
        if p
    ]
    if req.workflow_version is not None and req.workflow_version < 1:
        problems.append(f"workflow_version must be at least 1, got {req.workflow_version}")
    if req.input_json is None and req.input_ref is not None:
        problems.append("the run input must be inline (input_json): the scheduler does not fetch input_ref")
    if problems:
        raise Rejected("; ".join(problems), "invalid_request")


def parse_input(req: RunRequested) -> dict[str, Any]:
    """The request's run input, held to the shared intake rules; raises Rejected."""
    size = len((req.input_json or "").encode())
    # An input with its ref came (or may come) through the blob store: the shell resolved it.
    limit = intake.MAX_INPUT_BYTES if req.input_ref is not None else intake.MAX_INLINE_INPUT_BYTES
    if size > limit:
        where = "by reference" if req.input_ref is not None else "inlined"
        raise Rejected(
            f"run input is {size} bytes; at most {limit} may be {where} "
            "(store larger inputs in the blob store and pass input_ref)",
            "oversized",
        )
    try:
        run_input = intake.parse_input(req.input_json, limit)
    except intake.InvalidRequest as exc:
        raise Rejected(str(exc), "invalid_input") from None
    if req.input_ref is not None and req.input_ref != content_ref(run_input):
        raise Rejected("input_ref is not the content ref of input_json", "invalid_input")
    return run_input


def admit(req: RunRequested, spec: WorkflowSpec) -> dict[str, Any]:
    """The run input of a request that may start a run of `spec`; raises Rejected with every reason."""
    run_input = parse_input(req)
    try:
        validate_input(spec, run_input)
    except InvalidInput as exc:
        raise Rejected(f"{exc} (workflow version {spec.version})", "invalid_input") from None
    return run_input
