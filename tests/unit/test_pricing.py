"""keel.pricing: real models from genai-prices, Keel's simulator models, the deployment's file over both,
exact micro-dollars, and no network at run time."""

from __future__ import annotations

import random
import socket
from fractions import Fraction
from pathlib import Path

import genai_prices
import pytest
from genai_prices.data_snapshot import get_snapshot

from keel import pricing
from keel.pricing import UnknownModelPrice, cost_micros, cost_usd, price_of, worst_case_micros


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_PRICING_FILE", raising=False)
    cached = getattr(pricing, "_genai", None)
    if cached is not None:
        cached.cache_clear()


def _genai_micros(model: str, provider: str, **usage: int) -> Fraction:
    total = genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id=provider).total_price
    return Fraction(total) * 1_000_000


def test_real_models_are_priced_by_genai_prices() -> None:
    assert price_of("openai/gpt-4o-mini").source == "genai-prices"
    assert price_of("gpt-4o-mini").source == "genai-prices"  # a bare name, as providers call it
    want = _genai_micros("gpt-4o-mini", "openai", input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_micros("openai/gpt-4o-mini", 1_000_000, 1_000_000) == want
    assert want > 0


def test_cached_input_tokens_cost_less_where_the_model_prices_them() -> None:
    full = cost_micros("openai/gpt-4o-mini", 100_000, 0)
    half_cached = cost_micros("openai/gpt-4o-mini", 100_000, 0, cached_tokens=50_000)
    want = _genai_micros(
        "gpt-4o-mini", "openai", input_tokens=100_000, output_tokens=0, cache_read_tokens=50_000
    )
    assert half_cached == want and half_cached < full


def test_per_request_fees_count_in_the_cost_and_the_worst_case() -> None:
    fee_only = cost_micros("perplexity/sonar", 0, 0)
    assert fee_only > 0  # a call with no tokens still costs its request fee
    assert worst_case_micros("perplexity/sonar", 1000, 100) == cost_micros("perplexity/sonar", 1000, 100)
    assert worst_case_micros("perplexity/sonar", 1000, 100) >= fee_only


def test_simulator_models_keep_keels_prices() -> None:
    assert price_of("sim-large").source == "keel"
    assert cost_usd("sim-large", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert cost_micros("sim-small", 7, 3) == 2  # 1.9 micro-dollars, rounded up


def test_the_file_overrides_real_models_with_cached_and_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "openai/gpt-4o-mini: {prompt: 1, completion: 2, cached: 0.5, per_request: 0.01}\n"
        "acme/private: {prompt: 3, completion: 4}\n"
    )
    monkeypatch.setenv("KEEL_PRICING_FILE", str(prices))
    assert price_of("openai/gpt-4o-mini").source == "file"
    # 600k uncached × $1 + 400k cached × $0.5 + 100k × $2 per 1M, + $0.01 = $1.01
    assert cost_micros("openai/gpt-4o-mini", 1_000_000, 100_000, cached_tokens=400_000) == 1_010_000
    assert cost_micros("acme/private", 1_000_000, 0) == 3_000_000
    bad = tmp_path / "bad.yaml"
    bad.write_text("acme/private: {prompt: 1, completion: 1, per_request: -1}\n")
    with pytest.raises(ValueError, match="per_request"):
        pricing.pricing_table(str(bad))


def test_a_model_nobody_prices_is_refused() -> None:
    for model in ("nobody/knows", "mystery-model", "openai/no-such-model-xyz"):
        with pytest.raises(UnknownModelPrice, match="KEEL_PRICING_FILE"):
            price_of(model)


def test_micros_are_exact_from_the_tokens() -> None:
    """Exact rational arithmetic from the listed prices, rounded up: never a float converted."""
    rng = random.Random(7)
    rates = {"sim-small": (Fraction("0.10"), Fraction("0.40")), "sim-medium": (Fraction("0.5"), Fraction(2))}
    for _ in range(3000):
        model = rng.choice(sorted(rates))
        p, c = rng.randrange(0, 10**7), rng.randrange(0, 10**6)
        exact = (p * rates[model][0] + c * rates[model][1]) / 10**6 * 10**6
        assert cost_micros(model, p, c) == -((-exact.numerator) // exact.denominator), (model, p, c)


def test_no_network_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert cost_micros("anthropic/claude-3-5-haiku", 1000, 1000) > 0
    assert get_snapshot().from_auto_update is False  # the bundled data, never a fetched one
