"""Model prices, the cost of a call and its worst case, in exact decimals and integer micro-dollars.

Where a model's price comes from, first match wins:
1. KEEL_PRICING_FILE: this deployment's own prices (private models, negotiated rates);
2. Keel's table (DEFAULT_PRICES): the local model simulator's made-up models;
3. genai-prices (pinned): the maintained price table of real providers' models (input, output, cached
   input tokens, per-request fees, tiers and dated price changes), shipped with the package.
A model none of them knows is refused: it is never called, since its spend could not be counted.

No network at run time: genai-prices fetches newer prices only when its `UpdatePrices` is started, which
Keel never does; its bundled snapshot is all it reads. A price change is a pinned upgrade, reviewed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import cache
from pathlib import Path
from typing import Protocol

import yaml
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot

PRICING_FILE_ENV = "KEEL_PRICING_FILE"
MICROS_PER_USD = 1_000_000
_PER_M = Decimal(1_000_000)


def _dec(value: float) -> Decimal:
    # Through str: 0.1 is the price written, not the binary float nearest to it.
    return Decimal(str(value))


class ModelPrice(Protocol):
    """What a call costs, from its token counts."""

    @property
    def source(self) -> str: ...  # where the price came from: file, keel, genai-prices

    def usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal: ...


@dataclass(frozen=True)
class Price:
    """A flat price: USD per 1,000,000 tokens, cached input tokens at their own rate, a fee per call."""

    prompt_per_m: float  # USD per 1,000,000 prompt tokens (cached ones included unless cached_per_m)
    completion_per_m: float  # USD per 1,000,000 completion tokens
    cached_per_m: float | None = None  # USD per 1,000,000 cached prompt tokens; None: as prompt_per_m
    per_request: float = 0.0  # USD per call, whatever its tokens
    source: str = "keel"

    def usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_rate = self.prompt_per_m if self.cached_per_m is None else self.cached_per_m
        tokens = (
            (prompt_tokens - cached) * _dec(self.prompt_per_m)
            + cached * _dec(cached_rate)
            + completion_tokens * _dec(self.completion_per_m)
        )
        return tokens / _PER_M + _dec(self.per_request)


@dataclass(frozen=True)
class GenaiPrice:
    """A real provider's model, priced by genai-prices (its tiers, cache reads and request fees)."""

    model_ref: str
    provider_id: str | None
    source: str = "genai-prices"

    def usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        # genai-prices counts cache reads inside input_tokens, as OpenAI's usage does.
        usage = Usage(
            input_tokens=prompt_tokens,
            output_tokens=completion_tokens,
            cache_read_tokens=min(max(cached_tokens, 0), prompt_tokens),
        )
        return calc_price(usage, self.model_ref, provider_id=self.provider_id).total_price


DEFAULT_PRICES: dict[str, Price] = {
    # The local model simulator's models: made-up prices in a realistic ratio, so budget tests mean
    # something. Real models are priced by genai-prices.
    "sim-small": Price(0.10, 0.40),
    "sim-medium": Price(0.50, 2.00),
    "sim-large": Price(2.50, 10.00),
}


class UnknownModelPrice(LookupError):
    """A model with no price: it must not be called, or its spend could not be counted against budgets."""


def _number(path: Path, model: object, entry: dict[str, object], field: str, default: float | None) -> float:
    value = entry.get(field, default)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {model!r} needs a numeric {field!r} (USD)") from exc
    if number < 0 or not math.isfinite(number):
        raise ValueError(f"{path}: {model!r} has a negative or infinite {field!r}")
    return number


def _read(path: Path) -> dict[str, Price]:
    """model -> {prompt, completion[, cached][, per_request]}: USD per 1M tokens, and USD per call."""
    doc = yaml.safe_load(path.read_text()) or {}  # YAML is a superset of JSON: one loader takes either
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of model -> {{prompt, completion}}")
    prices: dict[str, Price] = {}
    for model, entry in doc.items():
        if not isinstance(entry, dict) or "prompt" not in entry or "completion" not in entry:
            raise ValueError(f"{path}: {model!r} needs numeric 'prompt' and 'completion' (USD per 1M)")
        cached = None if entry.get("cached") is None else _number(path, model, entry, "cached", None)
        prices[str(model)] = Price(
            _number(path, model, entry, "prompt", None),
            _number(path, model, entry, "completion", None),
            cached,
            _number(path, model, entry, "per_request", 0.0),
            "file",
        )
    return prices


@cache  # read once per process, like every other setting
def _table(path: str | None) -> dict[str, Price]:
    return {**DEFAULT_PRICES, **(_read(Path(path)) if path else {})}


def pricing_table(path: str | None = None) -> dict[str, Price]:
    """Keel's table with the file's entries (from `path` or KEEL_PRICING_FILE) laid over it (genai-prices'
    models are not listed: they are looked up by name)."""
    return dict(_table(path or os.environ.get(PRICING_FILE_ENV) or None))


@cache
def _genai(model: str) -> GenaiPrice | None:
    """`provider/model` (Keel's names) or a bare model name, as genai-prices knows it; None if unknown."""
    provider, _, ref = model.partition("/")
    candidates = [(ref, provider), (model, None)] if ref else [(model, None)]
    snapshot = get_snapshot()
    for model_ref, provider_id in candidates:
        try:
            snapshot.find_provider_model(model_ref, None, provider_id, None)
        except LookupError:
            continue
        return GenaiPrice(model_ref, provider_id)
    return None


def price_of(model: str, path: str | None = None) -> ModelPrice:
    table = _table(path or os.environ.get(PRICING_FILE_ENV) or None)
    found: ModelPrice | None = table.get(model) or _genai(model)
    if found is None:
        hint = f"add it to the file named by {PRICING_FILE_ENV}"
        raise UnknownModelPrice(
            f"no price for model {model!r} in {PRICING_FILE_ENV}, Keel's table ({sorted(table)}) "
            f"or genai-prices; {hint}"
        )
    return found


def _checked(*counts: int) -> None:
    if any(c < 0 for c in counts):
        raise ValueError("token counts must be non-negative")


def cost_decimal(
    model: str, prompt_tokens: int, completion_tokens: int, path: str | None = None, cached_tokens: int = 0
) -> Decimal:
    """The exact cost of a call in USD."""
    _checked(prompt_tokens, completion_tokens, cached_tokens)
    return price_of(model, path).usd(prompt_tokens, completion_tokens, cached_tokens)


def cost_usd(
    model: str, prompt_tokens: int, completion_tokens: int, path: str | None = None, cached_tokens: int = 0
) -> float:
    """The cost as a float, for `cost_usd_est` (display only: sums and budgets use cost_micros)."""
    return float(cost_decimal(model, prompt_tokens, completion_tokens, path, cached_tokens))


def decimal_to_micros(usd: Decimal) -> int:
    """Exact USD as integer micro-dollars, rounded up: a budget never under-counts a cost."""
    return int((usd * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def usd_to_micros(usd: float) -> int:
    """A float USD figure (a limit from configuration) as integer micro-dollars, rounded up: a budget
    never under-counts a cost. The rounding to 6 places first drops binary noise (0.1 + 0.2)."""
    return math.ceil(round(usd * MICROS_PER_USD, 6))


def cost_micros(
    model: str, prompt_tokens: int, completion_tokens: int, path: str | None = None, cached_tokens: int = 0
) -> int:
    """The cost of a call in integer micro-dollars, from the exact decimal cost (what sums and budgets
    use; never binary floats)."""
    return decimal_to_micros(cost_decimal(model, prompt_tokens, completion_tokens, path, cached_tokens))


def worst_case_micros(model: str, prompt_bytes: int, max_tokens: int, path: str | None = None) -> int:
    """The most a call can cost, without a tokenizer: a token is at least one byte of the UTF-8 prompt in
    every BPE vocabulary, so the prompt's size in bytes bounds its tokens; the answer is bounded by
    max_tokens; none of the prompt is assumed cached (cache reads only lower a price); the per-call fee
    is included."""
    return cost_micros(model, max(prompt_bytes, 0), max(max_tokens, 0), path)
