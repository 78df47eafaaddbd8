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
