"""The model router against the real model simulator: parsing, pricing, fallbacks and failure classes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keel.pricing import UnknownModelPrice, cost_usd, pricing_table
from services.executor.router import ModelError, ModelRequest, ModelRouter, Route, RouterSettings

pytestmark = pytest.mark.timeout(30)

MESSAGES = [
    {"role": "system", "content": "You write short emails."},
    {"role": "user", "content": "Draft a follow-up to Ada about the pilot."},
]


@pytest.fixture
def control(model_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=model_url, timeout=5.0) as client:
        client.post("/_reset").raise_for_status()
        yield client


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:
        yield client


def router(model_url: str, http: httpx.Client, **overrides: Any) -> ModelRouter:
    return ModelRouter(RouterSettings(model_url=f"{model_url}/v1", **overrides), http)


def dead_url() -> str:
    """A loopback URL nothing listens on: bind a port, then let it go."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def requests_made(control: httpx.Client) -> int:
    count: int = control.get("/_stats").json()["requests"]
    return count


def test_json_completion_is_parsed_and_priced(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    reply = router(model_url, http).complete(
        ModelRequest(model="sim-small", messages=MESSAGES, response_format="json")
    )
    assert reply.parsed is not None and set(reply.parsed) == {"subject", "body"}
    assert reply.model == "sim-small" and reply.attempts == [] and reply.provider.startswith("127.0.0.1:")
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.cost_usd == cost_usd("sim-small", reply.prompt_tokens, reply.completion_tokens) > 0


def test_text_completion_is_not_parsed(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    reply = router(model_url, http).complete(ModelRequest(model="sim-medium", messages=MESSAGES))
    assert reply.parsed is None and reply.content.startswith("Subject: ")


def test_completion_is_deterministic(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    req = ModelRequest(model="sim-large", messages=MESSAGES, response_format="json")
    first, second = router(model_url, http).complete(req), router(model_url, http).complete(req)
    assert (first.content, first.prompt_tokens, first.completion_tokens, first.cost_usd) == (
        second.content,
        second.prompt_tokens,
        second.completion_tokens,
        second.cost_usd,
    )


def test_rate_limit_falls_back(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    control.post("/_faults", json={"kind": "rate_limit", "retry_after": 1}).raise_for_status()
    routes = {"sim-large": Route(fallbacks=["sim-medium", "sim-small"])}
    reply = router(model_url, http, model_routes=routes).complete(
        ModelRequest(model="sim-large", messages=MESSAGES, response_format="json")
    )
    assert reply.model == "sim-medium" and reply.attempts == [("sim-large", "rate_limited")]
    assert reply.cost_usd == cost_usd("sim-medium", reply.prompt_tokens, reply.completion_tokens)


def test_exhausted_fallbacks_raise_the_last_class(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    control.post("/_faults", json={"kind": "rate_limit", "retry_after": 3, "times": 2}).raise_for_status()
    routes = {"sim-large": Route(fallbacks=["sim-small"])}
    with pytest.raises(ModelError) as caught:
        router(model_url, http, model_routes=routes).complete(
            ModelRequest(model="sim-large", messages=MESSAGES)
        )
    assert caught.value.failure_class == "rate_limited" and caught.value.retry_after_ms == 3000
    assert caught.value.attempts == [("sim-large", "rate_limited"), ("sim-small", "rate_limited")]


def test_bad_key_is_auth_without_fallback(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    routes = {"sim-large": Route(fallbacks=["sim-small"])}
    r = router(model_url, http, model_routes=routes, model_api_key=SecretStr("wrong"))
    with pytest.raises(ModelError) as caught:
        r.complete(ModelRequest(model="sim-large", messages=MESSAGES))
    assert caught.value.failure_class == "auth" and caught.value.attempts == [("sim-large", "auth")]
    assert requests_made(control) == 1


def test_dead_port_is_transient(model_url: str, http: httpx.Client) -> None:
    r = ModelRouter(RouterSettings(model_url=dead_url(), model_timeout_s=2.0), http)
    with pytest.raises(ModelError) as caught:
        r.complete(ModelRequest(model="sim-small", messages=MESSAGES))
    assert caught.value.failure_class == "transient" and "ConnectError" in caught.value.message


def test_dead_primary_falls_back_to_another_route(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    routes = {"sim-large": Route(url=dead_url(), fallbacks=["sim-small"])}
    reply = router(model_url, http, model_routes=routes).complete(
        ModelRequest(model="sim-large", messages=MESSAGES)
    )
    assert reply.model == "sim-small" and reply.attempts == [("sim-large", "transient")]


def test_unusable_json_is_validation(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    control.post("/_faults", json={"kind": "null_field", "field": "choices.0.message.content"})
    routes = {"sim-small": Route(fallbacks=["sim-medium"])}
    with pytest.raises(ModelError) as caught:
        router(model_url, http, model_routes=routes).complete(
            ModelRequest(model="sim-small", messages=MESSAGES, response_format="json")
        )
    assert caught.value.failure_class == "validation" and requests_made(control) == 1  # no blind fallback


def test_unpriced_model_is_never_called(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    with pytest.raises(UnknownModelPrice, match="mystery-model"):
        router(model_url, http).complete(ModelRequest(model="mystery-model", messages=MESSAGES))
    assert requests_made(control) == 0


def test_pricing_file_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cost_usd("sim-large", 1_000_000, 1_000_000) == pytest.approx(12.5)
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "sim-large: {prompt: 1, completion: 2}\nacme/house-model: {prompt: 0.5, completion: 1}\n"
    )
    monkeypatch.setenv("KEEL_PRICING_FILE", str(prices))
    assert cost_usd("sim-large", 500_000, 250_000) == pytest.approx(1.0)
    assert "acme/house-model" in pricing_table() and "sim-small" in pricing_table()


def test_pricing_refuses_unknown_models_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelPrice, match="KEEL_PRICING_FILE"):
        cost_usd("nobody/knows", 1, 1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"sim-small": {"prompt": "free"}}')
    with pytest.raises(ValueError, match="sim-small"):
        pricing_table(str(bad))


def test_non_json_content_is_validation_and_still_costed() -> None:
    # The simulator always honours json_object, so a provider that ignores it is played by a transport.
    def reply(request: httpx.Request) -> httpx.Response:
        body = {
            "choices": [{"message": {"content": "Sure! Here is the email: ..."}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500},
        }
        return httpx.Response(200, json=body)

    with httpx.Client(transport=httpx.MockTransport(reply)) as http:
        with pytest.raises(ModelError) as caught:
            ModelRouter(RouterSettings(), http).complete(
                ModelRequest(model="sim-small", messages=MESSAGES, response_format="json")
            )
    assert caught.value.failure_class == "validation" and "not valid JSON" in caught.value.message
    assert caught.value.cost_usd == cost_usd("sim-small", 1000, 500)


def test_no_call_starts_after_the_attempts_deadline(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    routes = {"sim-large": Route(fallbacks=["sim-small"])}
    late = ModelRequest(model="sim-large", messages=MESSAGES, deadline_ms=int(time.time() * 1000) - 1)
    with pytest.raises(ModelError) as caught:
        router(model_url, http, model_routes=routes).complete(late)
    assert caught.value.failure_class == "transient" and "deadline" in caught.value.message
    assert requests_made(control) == 0  # neither the model nor its fallback was asked


def test_no_call_waits_past_the_attempts_deadline(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    control.post("/_faults", json={"kind": "latency", "ms": 5000}).raise_for_status()
    soon = ModelRequest(model="sim-small", messages=MESSAGES, deadline_ms=int(time.time() * 1000) + 500)
    started = time.monotonic()
    with pytest.raises(ModelError) as caught:
        router(model_url, http, model_timeout_s=30.0).complete(soon)
    assert caught.value.failure_class == "transient" and time.monotonic() - started < 2.0
