"""Model prices (USD per million tokens), the cost of a call and its worst case.

The table is overridable from KEEL_PRICING_FILE."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

PRICING_FILE_ENV = "KEEL_PRICING_FILE"


@dataclass(frozen=True)
class Price:
    prompt_per_m: float  # USD per 1,000,000 prompt tokens
    completion_per_m: float  # USD per 1,000,000 completion tokens


DEFAULT_PRICES: dict[str, Price] = {
    # The local model simulator's models: made-up prices in a realistic ratio, so budget tests mean something.
    "sim-small": Price(0.10, 0.40),
    "sim-medium": Price(0.50, 2.00),
    "sim-large": Price(2.50, 10.00),
    # Examples of real models, at list prices when written: check the provider's current prices and put
    # the ones you use in KEEL_PRICING_FILE rather than trusting these.
    "openai/gpt-4o-mini": Price(0.15, 0.60),
    "openai/gpt-4o": Price(2.50, 10.00),
    "anthropic/claude-3-5-haiku": Price(0.80, 4.00),
}


class UnknownModelPrice(LookupError):
    """A model with no price: it must not be called, or its spend could not be counted against budgets."""


def _read(path: Path) -> dict[str, Price]:
    # YAML is a superset of JSON, so one loader takes either file.
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of model -> {{prompt, completion}}")
    prices: dict[str, Price] = {}
    for model, entry in doc.items():
        try:
            prompt, completion = float(entry["prompt"]), float(entry["completion"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"{path}: {model!r} needs numeric 'prompt' and 'completion' (USD per 1M)"
            ) from exc
        if prompt < 0 or completion < 0:
            raise ValueError(f"{path}: {model!r} has a negative price")
        prices[str(model)] = Price(prompt, completion)
    return prices


@cache  # read once per process, like every other setting
def _table(path: str | None) -> dict[str, Price]:
    return {**DEFAULT_PRICES, **(_read(Path(path)) if path else {})}


def pricing_table(path: str | None = None) -> dict[str, Price]:
    """The defaults with the file's entries (from `path` or KEEL_PRICING_FILE) laid over them."""
    return dict(_table(path or os.environ.get(PRICING_FILE_ENV) or None))


def price_of(model: str, path: str | None = None) -> Price:
    table = _table(path or os.environ.get(PRICING_FILE_ENV) or None)
    try:
        return table[model]
    except KeyError:
        hint = f"add it to the file named by {PRICING_FILE_ENV}"
        raise UnknownModelPrice(f"no price for model {model!r}; {hint} (known: {sorted(table)})") from None


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, path: str | None = None) -> float:
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must be non-negative")
    price = price_of(model, path)
    return (prompt_tokens * price.prompt_per_m + completion_tokens * price.completion_per_m) / 1_000_000


MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float) -> int:
    """USD as integer micro-dollars, rounded up: a budget never under-counts a cost."""
    return math.ceil(round(usd * MICROS_PER_USD, 6))


def cost_micros(model: str, prompt_tokens: int, completion_tokens: int, path: str | None = None) -> int:
    """The cost of a call in integer micro-dollars (what sums and budgets use; never binary floats)."""
    return usd_to_micros(cost_usd(model, prompt_tokens, completion_tokens, path))


def worst_case_micros(model: str, prompt_bytes: int, max_tokens: int, path: str | None = None) -> int:
    """The most a call can cost, without a tokenizer: a token is at least one byte of the UTF-8 prompt in
    every BPE vocabulary, so the prompt's size in bytes bounds its tokens; the answer is bounded by
    max_tokens."""
    return cost_micros(model, max(prompt_bytes, 0), max(max_tokens, 0), path)
