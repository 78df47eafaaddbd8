"""Canonical JSON, content references and the idempotency key: formats written once, never changed."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """One text per JSON value: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_ref(value: Any) -> str:
    """Content address of a JSON value: `sha256:<hex of its canonical JSON>`."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()


def idempotency_key(tenant_id: str, workflow: str, run_id: str, step: str, payload: Any) -> str:
    # FROZEN FORMAT: tenant|workflow|run|step|sha256:<hex of the canonical payload>. Providers store these
    # keys and the ledger is keyed by them: changing the format would make every retry after an upgrade
    # look like a new effect. Never change it; golden values in tests/unit/test_idempotency.py.
    for name, part in (("tenant_id", tenant_id), ("workflow", workflow), ("run_id", run_id), ("step", step)):
        if not part or "|" in part:
            raise ValueError(f"{name} must be non-empty and must not contain '|': {part!r}")
    return f"{tenant_id}|{workflow}|{run_id}|{step}|{content_ref(payload)}"


def agent_call_key(
    tenant_id: str,
    workflow: str,
    run_id: str,
    step: str,
    tool: str,
    arguments: Any,
    *,
    side_effects: bool,
    turn: int,
    index: int,
) -> str:
    """The key of one tool call an agent step's model asked for.

    FROZEN FORMAT (the second one; golden values in tests/unit/test_idempotency.py):
    - a side-effecting tool: tenant|workflow|run|step|tool@version|sha256:<hex of the canonical arguments>
      -- no turn in it, so the same write asked for again in a later turn (or twice in one turn) has the
      same key, and the ledger answers it instead of the provider;
    - a read-only tool: tenant|workflow|run|step|tool@version|turn-T.call-I|sha256:<hex ...>, so each read
      is its own call (a lookup repeated later may see newer data) and is never answered by an old one.
    Never change it, for the reasons given at `idempotency_key`."""
    parts = (("tenant_id", tenant_id), ("workflow", workflow), ("run_id", run_id), ("step", step))
    for name, part in (*parts, ("tool", tool)):
        if not part or "|" in part:
            raise ValueError(f"{name} must be non-empty and must not contain '|': {part!r}")
    if turn < 1 or index < 0:
        raise ValueError(f"turn counts from 1 and call index from 0: turn {turn}, index {index}")
    prefix = f"{tenant_id}|{workflow}|{run_id}|{step}|{tool}"
    if side_effects:
        return f"{prefix}|{content_ref(arguments)}"
    return f"{prefix}|{call_name(turn, index)}|{content_ref(arguments)}"


def turn_name(turn: int) -> str:
    """The sub-step name of an agent step's model turn (the `call` of its commands and facts)."""
    return f"turn-{turn}"


def call_name(turn: int, index: int) -> str:
    """The sub-step name of the index-th tool call (from 0) a model turn asked for."""
    return f"turn-{turn}.call-{index}"
