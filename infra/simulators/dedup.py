"""How a simulated provider deduplicates writes, and the logical effect a write request names.

Dedup modes (set at start with KEEL_SIM_<NAME>_DEDUP, or at runtime with POST /_mode {"dedup": ...}):
- `key`: Stripe-like replay: a repeated Idempotency-Key with the same body gets the stored answer and no
  second delivery; the same key with another body is refused (422).
- `stripe`: `key`, plus Stripe's in-flight refusal: while a request with a key is still being processed,
  another request with that key gets 409 `idempotency_key_in_use`.
- `none`: no key dedup at all: every accepted POST is a new delivery (the key is only stored on the record,
  so a lookup by key still finds what was written under it).
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

DedupMode = Literal["key", "stripe", "none"]
DEDUP_MODES: tuple[str, ...] = get_args(DedupMode)

# The logical effect a write is for, as callers name it in the body's `metadata`. Keel's adapters send
# these (services/adapters/base.py): tenant, run and step, and for a tool call of an agent turn the call.
EFFECT_FIELDS = ("keel_tenant", "keel_run", "keel_step")
CALL_FIELD = "keel_call"


def effect_id(tenant: str, run: str, step: str, call: str | None = None) -> str:
    """The name a logical effect is counted under in GET /_stats `by_effect`."""
    return "|".join([tenant, run, step] if call is None else [tenant, run, step, call])


def effect_of(metadata: dict[str, Any] | None) -> str | None:
    """The logical effect a request's metadata names; None when it names none."""
    if not metadata or not all(isinstance(metadata.get(f), str) for f in EFFECT_FIELDS):
        return None
    call = metadata.get(CALL_FIELD)
    tenant, run, step = (metadata[f] for f in EFFECT_FIELDS)
    return effect_id(tenant, run, step, call=call if isinstance(call, str) else None)


def parse_mode(value: object) -> DedupMode:
    if value not in DEDUP_MODES:
        raise ValueError(f"unknown dedup mode {value!r}; choose one of {list(DEDUP_MODES)}")
    return value  # type: ignore[return-value]


def mode_from_env(name: str, default: DedupMode = "key") -> DedupMode:
    """The start-up mode: KEEL_SIM_<NAME>_DEDUP, else `default`."""
    return parse_mode(os.environ.get(f"KEEL_SIM_{name.upper()}_DEDUP", default).strip() or default)
