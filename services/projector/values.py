"""Event values as Postgres takes them: exact costs, JSON values, text without NUL."""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any


def cost_of(value: float | None) -> Decimal | None:
    # Decimal via repr: the shortest exact text of the float, so sums in numeric columns are exact.
    if value is None or not math.isfinite(value):
        return None
    return Decimal(repr(value))


MICROS_PER_USD = 1_000_000


def micros_of(cost_micros: int | None, cost_usd: Decimal | None) -> int | None:
    """A fact's cost in integer micro-dollars: its own `cost_micros`; for a fact written before that field
    existed, its exact USD figure rounded up (as keel.pricing rounds); None when it has no cost."""
    if cost_micros is not None:
        return cost_micros
    if cost_usd is None:
        return None
    return int((cost_usd * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def json_value(text: str | None) -> Any:
    """A *_json field as a JSON value; text that is not JSON is kept as a JSON string, not lost."""
    if text is None:
        return None
    try:
        return jsonable(json.loads(text))
    except ValueError:
        return clean(text)


def jsonable(value: Any) -> Any:
    """A value Postgres' jsonb accepts: timestamps as ISO text, no NaN, no NUL characters."""
    if isinstance(value, dict):
        return {clean(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    return clean(value) if isinstance(value, str) else value


def clean(text: Any) -> Any:
    # Postgres text and jsonb cannot hold NUL: one odd event must not make a whole batch unstorable.
    return text.replace("\x00", "\ufffd") if isinstance(text, str) else text
