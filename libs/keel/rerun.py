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


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: `patch`'s members replace `target`'s, null removes one, objects merge."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = merge_patch(out.get(name), value)
    return out


def origin_fields(
    spec: WorkflowSpec,
    from_step: str,
    outputs: dict[str, Any],
    started: dict[str, tuple[str | None, str | None]],
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """(reused, origin keys) of a re-run of an origin run from `from_step`.

    `outputs`: the origin's committed output of each committed step (or its claim check);
    `started`: per step, the idempotency key and rendered-input ref of its first attempt. Steps not
    at or after `from_step` that committed are reused; each step at or after it that had a key keeps
    a record of it (an llm or approval step has no key: it is simply run again)."""
    live = at_or_after(spec, from_step)
    reused = {name: out for name, out in outputs.items() if name not in live}
    keys = {
        name: {"key": key, "input_ref": ref}
        for name, (key, ref) in started.items()
        if name in live and key is not None and ref is not None
    }
    return reused, keys
