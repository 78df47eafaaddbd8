"""Re-runs from a step (docs/rerun.md): which steps a re-run reuses, and the fields of its request.

One definition for the API (which fills the request from the origin's projection) and the scheduler
(which checks it), so both agree on what "the steps before N" are.
"""

from __future__ import annotations

import json
from typing import Any

from keel.workflows import WorkflowSpec


def at_or_after(spec: WorkflowSpec, from_step: str) -> set[str]:
    """`from_step` and every step that needs it, directly or not: they run live in a re-run. Every
    other step (before it, or on a branch that does not depend on it) is reused from the origin."""
    names = {s.name for s in spec.steps}
    if from_step not in names:
        raise ValueError(f"workflow {spec.name} v{spec.version} has no step {from_step!r}")
    live = {from_step}
    grew = True
    while grew:
        grew = False
        for step in spec.steps:
            if step.name not in live and live & set(step.needs):
                live.add(step.name)
                grew = True
    return live


def parse_reused(text: str | None) -> dict[str, Any]:
    """The request's reused_json: {step: committed output}."""
    value = json.loads(text) if text else {}
    if not isinstance(value, dict):
        raise ValueError("reused_json must be a JSON object {step: output}")
    return value


def parse_origin_keys(text: str | None) -> dict[str, dict[str, str]]:
    """The request's origin_keys_json: {step: {"key": ..., "input_ref": ...}}."""
    value = json.loads(text) if text else {}
    ok = isinstance(value, dict) and all(
        isinstance(v, dict) and isinstance(v.get("key"), str) and isinstance(v.get("input_ref"), str)
        for v in value.values()
    )
    if not ok:
        raise ValueError('origin_keys_json must be a JSON object {step: {"key": str, "input_ref": str}}')
    return value
