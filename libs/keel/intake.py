"""What a run request must look like, wherever it enters: the API and the scheduler check the same rules.

One definition, so a request published straight to `keel.run-requests` is held to exactly what
`POST /v1/runs` enforces, and is refused (dead-lettered with the reason) before anything is spent.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Run ids appear in paths, keys and idempotency keys: no separators, no traversal, bounded.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# Tenants name credentials, budgets and key scopes: lower-case slugs.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
WORKFLOW_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TASK_ID_MAX = 256
IDEMPOTENCY_KEY_MAX = 255
# Inline run inputs travel in every event that copies them; larger ones belong in the blob store.
MAX_INLINE_INPUT_BYTES = 256 * 1024
# A run input that travels by reference (input_ref, its content in the blob store) may be this large.
MAX_INPUT_BYTES = 32 * 1024 * 1024

_RUN_ID = re.compile(RUN_ID_PATTERN)
_TENANT = re.compile(TENANT_PATTERN)
_WORKFLOW = re.compile(WORKFLOW_PATTERN)


class InvalidRequest(ValueError):
    """A run request breaks an intake rule; `problems` lists each, in words a caller can act on."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def run_id_problem(run_id: str) -> str | None:
    if not _RUN_ID.match(run_id or ""):
        return f"run_id {run_id!r} must match {RUN_ID_PATTERN}"
    return None


def tenant_problem(tenant_id: str) -> str | None:
    if not _TENANT.match(tenant_id or ""):
        return f"tenant_id {tenant_id!r} must match {TENANT_PATTERN}"
    return None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _finite(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _no_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all("\x00" not in k and _no_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_no_nul(v) for v in value)
    return True


def input_problems(run_input: Any) -> list[str]:
    """Problems of a parsed run input (a JSON object of finite numbers, no NUL characters)."""
    if not isinstance(run_input, dict):
        return ["the run input must be a JSON object"]
    problems = []
    if not _finite(run_input):
        problems.append("the run input holds a number that is not finite (NaN, Infinity or out of range)")
    if not _no_nul(run_input):
        problems.append("the run input holds a NUL character (U+0000), which Keel refuses rather than alters")
    return problems


def parse_input(input_json: str | None, limit: int = MAX_INLINE_INPUT_BYTES) -> dict[str, Any]:
    """The run input of a request as a dict; raises InvalidRequest when it is not a valid one."""
    size = len((input_json or "").encode())
    if size > limit:
        raise InvalidRequest([f"run input is {size} bytes; at most {limit} may be inlined (pass input_ref)"])

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(input_json or "{}", parse_constant=refuse_constant)
    except ValueError as exc:
        raise InvalidRequest([f"the run input is not valid JSON: {exc}"]) from None
    problems = input_problems(value)
    if problems:
        raise InvalidRequest(problems)
    return value  # type: ignore[no-any-return]


def request_problems(*, run_id: str, tenant_id: str, workflow: str, task_id: str | None = None) -> list[str]:
    """Problems of a run request's identifying fields (not its input: see `parse_input`)."""
    problems = [p for p in (run_id_problem(run_id), tenant_problem(tenant_id)) if p]
    if not _WORKFLOW.match(workflow or ""):
        problems.append(f"workflow {workflow!r} must match {WORKFLOW_PATTERN}")
    if task_id is not None and not (0 < len(task_id) <= TASK_ID_MAX and "\x00" not in task_id):
        problems.append(f"task_id must be 1..{TASK_ID_MAX} characters without NUL")
    return problems
