"""Routing by route class and tenant allow-lists, against the model simulator: the class picks the models,
a model the tenant may not use is never called, fallbacks follow the failure class, and the answer says
why its route was taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from helpers import wait_for
from pydantic import SecretStr

from keel.background import BackgroundCalls
from keel.contracts import StepCommand
from keel.pricing import worst_case_micros
from keel.routing import RouteConfig, route_worst_case_micros
from keel.txloop import Output, Record, Reject
from services.executor.router import ModelError, ModelRequest, ModelRouter, Route, RouterSettings
from services.executor.service import ExecutorProcessor

pytestmark = pytest.mark.timeout(30)

MESSAGES = [{"role": "user", "content": "Extract the order number from: refund order 42."}]
CLASSES = {"extraction": ["sim-small", "sim-medium"], "write": ["sim-large"]}


@pytest.fixture
def control(model_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=model_url, timeout=5.0) as client:
        client.post("/_reset").raise_for_status()
        yield client


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:
        yield client


def router(model_url: str, http: httpx.Client, **overrides: object) -> ModelRouter:
    settings = RouterSettings(model_url=f"{model_url}/v1", model_route_classes=CLASSES, **overrides)  # type: ignore[arg-type]
    return ModelRouter(settings, http)


def made(control: httpx.Client) -> int:
    return int(control.get("/_stats").json()["requests"])


def test_the_route_class_picks_the_model(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    req = ModelRequest(model="sim-large", messages=MESSAGES, route_class="extraction")
    answer = router(model_url, http).complete(req)
    assert answer.model == "sim-small" and made(control) == 1
    assert "route class 'extraction'" in answer.route_reason


def test_no_route_class_or_an_unconfigured_one_uses_the_steps_model(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    r = router(model_url, http)
    assert r.complete(ModelRequest(model="sim-large", messages=MESSAGES)).model == "sim-large"
    answer = r.complete(ModelRequest(model="sim-large", messages=MESSAGES, route_class="planning"))
    assert answer.model == "sim-large" and "'planning' is not configured" in answer.route_reason


def test_rate_limited_falls_back_to_the_next_model_of_the_class(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    control.post("/_faults", json={"kind": "rate_limit", "retry_after": 1}).raise_for_status()
    req = ModelRequest(model="sim-large", messages=MESSAGES, route_class="extraction")
    answer = router(model_url, http).complete(req)
    assert answer.model == "sim-medium" and answer.attempts == [("sim-small", "rate_limited")]
    assert "fallback #1 after ['sim-small']" in answer.route_reason


def test_auth_never_falls_back(control: httpx.Client, model_url: str, http: httpx.Client) -> None:
    req = ModelRequest(model="sim-large", messages=MESSAGES, route_class="extraction")
    with pytest.raises(ModelError) as caught:
        router(model_url, http, model_api_key=SecretStr("wrong")).complete(req)
    assert caught.value.failure_class == "auth" and caught.value.attempts == [("sim-small", "auth")]
    assert made(control) == 1


def test_a_model_the_tenant_may_not_use_is_never_called(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    r = router(model_url, http, tenant_models={"acme": ["sim-medium"]})
    req = ModelRequest(model="sim-large", messages=MESSAGES, route_class="extraction", tenant="acme")
    answer = r.complete(req)
    assert answer.model == "sim-medium" and answer.attempts == [] and made(control) == 1
    assert "tenant 'acme' allows only ['sim-medium']" in answer.route_reason
    # The step's own model and its fallbacks are filtered too.
    routes = {"sim-large": Route(fallbacks=["sim-medium"])}
    r = router(model_url, http, model_routes=routes, tenant_models={"acme": ["sim-medium"]})
    assert r.complete(ModelRequest(model="sim-large", messages=MESSAGES, tenant="acme")).model == "sim-medium"
    # Another tenant, not listed, may use any model.
    other = ModelRequest(model="sim-large", messages=MESSAGES, route_class="extraction", tenant="globex")
    assert r.complete(other).model == "sim-small"


def test_an_empty_intersection_is_auth_and_calls_nothing(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    r = router(model_url, http, tenant_models={"acme": ["sim-large"]})
    req = ModelRequest(model="sim-small", messages=MESSAGES, route_class="extraction", tenant="acme")
    with pytest.raises(ModelError) as caught:
        r.complete(req)
    assert caught.value.failure_class == "auth" and "may use none of" in caught.value.message
    assert made(control) == 0


def step(body: dict[str, object], tenant: str = "acme") -> StepCommand:
    return StepCommand(
        command_id="r/s/1",
        run_id="r",
        tenant_id=tenant,
        workflow="w",
        workflow_version=1,
        step="s",
        kind="llm",
        attempt=1,
        input_json=json.dumps(body),
        issued_at=datetime.now(UTC),
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )


def test_the_executor_reads_the_route_class_and_the_tenant_from_the_command(
    control: httpx.Client, model_url: str, http: httpx.Client
) -> None:
    executor = ExecutorProcessor(
        router(model_url, http, tenant_models={"acme": ["sim-medium", "sim-small"], "globex": ["sim-large"]}),
        BackgroundCalls(1),
    )

    def run(cmd: StepCommand) -> list[object]:
        executor.handle(Record("keel.step-commands", 0, 1, cmd.run_id, cmd, 0))
        executor.on_commit()
        wait_for(lambda: executor.calls.pending() == 0, 10, "the call to finish")
        return [o.value for o in executor.tick(0) if isinstance(o, Output)]

    body = {"model": "sim-large", "prompt": "Order 42?", "route_class": "extraction"}
    called = run(step(body))[0]
    assert called.event == "model_called" and called.model == "sim-small"  # type: ignore[attr-defined]
    failed = run(step(body, tenant="globex"))[0]
    assert failed.event == "step_failed"  # type: ignore[attr-defined]
    assert failed.step_detail.failure_class == "auth"  # type: ignore[attr-defined]
    with pytest.raises(Reject, match="route_class"):
        executor.handle(Record("keel.step-commands", 0, 2, "r", step({**body, "route_class": 7}), 0))


def test_the_scheduler_reads_the_same_routes_and_reserves_for_the_dearest_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "KEEL_MODEL_ROUTES": json.dumps({"sim-small": {"fallbacks": ["sim-large"]}}),
        "KEEL_MODEL_ROUTE_CLASSES": json.dumps(CLASSES),
        "KEEL_TENANT_MODELS": json.dumps({"acme": ["sim-small", "sim-medium"]}),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    shared, executor = RouteConfig.from_env(), RouterSettings()
    for model, route_class, tenant in [
        ("sim-small", None, None),
        ("sim-small", None, "acme"),
        ("sim-large", "extraction", None),
        ("sim-large", "write", "globex"),
        ("sim-medium", "planning", "acme"),
    ]:
        assert shared.plan(model, route_class, tenant) == executor.plan(model, route_class, tenant)
    # The step names sim-small, whose fallback is sim-large: the reservation covers sim-large.
    route = shared.plan("sim-small", None, None)
    assert route_worst_case_micros(route, 1000, 100) == worst_case_micros("sim-large", 1000, 100)
    assert route_worst_case_micros(route, 1000, 100) > worst_case_micros("sim-small", 1000, 100)
    # For acme, sim-large is not allowed: its reservation is sim-small's.
    acme = shared.plan("sim-small", None, "acme")
    assert route_worst_case_micros(acme, 1000, 100) == worst_case_micros("sim-small", 1000, 100)
