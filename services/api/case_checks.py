"""A quarantine decision's payload checked before it is sent (docs/quarantine.md): an edited input
against the tool's input schema, a supplied output against the step's output schema (or its tool's).

The scheduler checks again when it applies the decision; checking here answers the operator at once,
with the JSON path of every problem, instead of with a refusal on the run's log later.
"""

from __future__ import annotations

from typing import Any

from keel import vocab
from keel.tooldefs.contract import Contract
from keel.workflows import StepSpec, UnknownWorkflow
from services.api import case_queries
from services.api.deps import Deps
from services.api.errors import ApiError


def check(deps: Deps, case: dict[str, Any], decision: str, new_input: Any, output: Any) -> None:
    """400 `invalid_input` / `invalid_output` naming each problem as `$.path: message`."""
    if decision not in (vocab.EDIT, vocab.SKIP):
        return
    step, tool = _step_and_tool(deps, case)
    if decision == vocab.EDIT:
        if tool is None:
            raise ApiError(
                400, "invalid_decision", f"case {case['case_id']} is not a tool call: nothing to edit"
            )
        _against(deps.tools.get(tool).input_schema, new_input, "invalid_input", f"the input of {tool}")
        return
    schema, what = None, "the step's output"
    if step is not None and step.output_schema is not None and not case["call"]:
        schema = step.output_schema
    elif tool is not None:
        schema, what = deps.tools.get(tool).output_schema, f"the output of {tool}"
    if schema is not None:
        _against(schema, output, "invalid_output", what)


def _against(schema: dict[str, Any], value: Any, code: str, what: str) -> None:
    problems = Contract(schema).violations(value)
    if problems:
        raise ApiError(400, code, f"{what} does not meet its schema: {'; '.join(problems)}")


def _step_and_tool(deps: Deps, case: dict[str, Any]) -> tuple[StepSpec | None, str | None]:
    """The case's step (as its run's workflow version declares it) and the tool it calls: the step's
    tool, or for an agent's tool call the tool the quarantined call named."""
    step = None
    with deps.pool.connection(case["tenant_id"]) as conn:
        run = case_queries.run_of(conn, deps.api.projection_schema, case["run_id"])
        evidence = case_queries.case_evidence(conn, deps.api.projection_schema, case) or {}
    if run is not None and case["step"]:
        try:
            spec = deps.catalog.get(run["workflow"], run["workflow_version"])
            step = next((s for s in spec.steps if s.name == case["step"]), None)
        except UnknownWorkflow:
            step = None
    named = (evidence.get("tool") or {}).get("tool")
    tool = named if case["call"] else (step.tool if step is not None and step.tool else named)
    if tool is not None and tool not in deps.tools:
        tool = None  # a tool this API does not know: the scheduler checks it
    return step, tool
