"""API keys, run ids from idempotency keys, cursors, and the API's answers that need no database or broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from keel.contracts import RunRequested
from keel.settings import Settings
from keel.workflows import Catalog
from services.api.apikeys import ApiKeyConfigError, ApiKeys, hash_key, tenant_for
from services.api.app import create_app
from services.api.config import ApiSettings
from services.api.queries import BadCursor, decode_cursor, encode_cursor
from services.api.submit import DeliveryFailed, Publisher, run_id_for


def test_hash_key_is_the_sha256_of_the_key():
    assert (
        hash_key("acme-dev-key") == "sha256:7f2e6802f17f6ba210bb387707340e4fa6d03de0347ddcc5dd4ece4439694fce"
    )


def test_dev_keys_are_the_default_and_configured_keys_replace_them(monkeypatch):
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    assert (tenant_for("acme-dev-key"), tenant_for("globex-dev-key")) == ("acme", "globex")
    assert tenant_for("acme-dev-key ") is None and tenant_for("") is None
    monkeypatch.setenv("KEEL_API_KEYS", json.dumps({"initech": [hash_key("k1"), hash_key("k2")]}))
    assert (tenant_for("k1"), tenant_for("k2"), tenant_for("acme-dev-key")) == ("initech", "initech", None)


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("not json", "not valid JSON"),
        ('"a"', "must be a JSON list of keys"),
        ('{"acme": "sha256:00"}', "must map to a list"),
        ('{"acme": ["plain-key"]}', "is not 'sha256:<64 hex digits>'"),
        (json.dumps({"a": [hash_key("x")], "b": [hash_key("x")]}), "listed for 'a' and 'b'"),
        (json.dumps({"Acme Corp": [hash_key("x")]}), "tenant_id 'Acme Corp' must match"),
    ],
)
def test_a_bad_key_configuration_is_refused_with_the_reason(raw, problem):
    with pytest.raises(ApiKeyConfigError, match=problem):
        ApiKeys.from_json(raw)


def test_run_ids_from_idempotency_keys_are_stable_and_per_tenant():
    # FROZEN: golden values; a change would give retried POSTs new runs.
    assert run_id_for("acme", "order-42") == "run-b12862ea990a67144996b03f33c1d687"
    assert run_id_for("acme", "order-42") != run_id_for("globex", "order-42")


def test_cursors_round_trip_and_garbage_is_a_clear_error():
    ts = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(ts, "run-1")) == (ts, "run-1")
    with pytest.raises(BadCursor, match="invalid cursor"):
        decode_cursor("%%%")


class RecordingPublisher(Publisher):
    """Publishes nowhere: keeps what it was given."""

    def __init__(self) -> None:
        self.published: list[RunRequested] = []

    def publish(self, request: RunRequested) -> None:
        self.published.append(request)

    def healthy(self, timeout_s: float) -> None:
        raise RuntimeError("no broker in unit tests")

    def close(self) -> None:
        pass


# The workflow files alone: the live view would also follow keel.definitions, and with no broker here its
# start waits 5 s for the topic's end on every app.
FILES = Catalog.configured()


@pytest.fixture
def client(monkeypatch):
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    api = ApiSettings(max_body_bytes=2048)
    with TestClient(create_app(Settings(), api, catalog=FILES, publisher=RecordingPublisher())) as c:
        yield c


ACME = {"Authorization": "Bearer acme-dev-key"}


def test_every_route_but_healthz_needs_a_valid_key(client):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer wrong"}):
        reply = client.get("/v1/workflows", headers=headers)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthenticated"
        assert reply.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in client.get("/v1/runs").json()["error"]["message"]
    assert client.get("/v1/workflows", headers=ACME).status_code == 200


def test_unknown_workflow_invalid_input_bad_bodies_and_oversized_bodies_are_clear_errors(client):
    def post(body: object) -> tuple[int, dict]:
        reply = client.post("/v1/runs", headers=ACME, content=json.dumps(body))
        return reply.status_code, reply.json()["error"]

    status, err = post({"workflow": "nope", "input": {}})
    assert (status, err["code"]) == (404, "unknown_workflow") and "outbound_email" in err["message"]
    status, err = post({"workflow": "outbound_email", "input": {"lead_email": 3}})
    assert (status, err["code"]) == (422, "invalid_input")
    assert (
        "missing fields 'lead_name', 'product'" in err["message"]
        and "'lead_email' should be string" in err["message"]
    )
    status, err = post({"workflow": "outbound_email", "input": [], "colour": "red"})
    assert (status, err["code"]) == (422, "invalid_request")
    assert "field 'input'" in err["message"] and "field 'colour'" in err["message"]
    status, err = post({"workflow": "outbound_email", "run_id": "a|b"})
    assert (status, err["code"]) == (422, "invalid_request") and "run_id" in err["message"]
    status, err = post({"workflow": "outbound_email", "input": {"x": "y" * 4096}})
    assert (status, err["code"]) == (413, "payload_too_large")
    reply = client.post("/v1/runs", headers=ACME, content=b"{not json")
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_request"


def test_unknown_routes_and_health_answer_in_the_same_shape(client):
    reply = client.get("/v2/nothing", headers=ACME)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["checks"]["broker"].startswith("unavailable")


class FailingPublisher(RecordingPublisher):
    def publish(self, request: RunRequested) -> None:
        raise DeliveryFailed("no acknowledgement from the broker within 10s")


LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_run_input_with_a_number_json_cannot_hold_is_refused_not_a_500(client, number):
    raw = '{"workflow": "outbound_email", "input": {"lead_email": "a@b.test", "lead_name": "A", '
    raw += f'"product": "K", "score": {number}}}}}'
    reply = client.post("/v1/runs", headers=ACME, content=raw)
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_input"), reply.text


def test_a_nul_inside_a_json_string_is_refused_never_altered(client):
    for body in (
        {"workflow": "outbound_email", "input": {**LEAD, "lead_name": "A\u0000B"}},
        {"workflow": "outbound_email", "input": {**LEAD, "k\u0000": "v"}},
        {"workflow": "outbound_email", "input": LEAD, "task_id": "t\u0000"},
    ):
        reply = client.post("/v1/runs", headers=ACME, json=body)
        assert reply.status_code == 422, reply.text
        assert "NUL" in reply.json()["error"]["message"]
    assert client.app.state.deps.publisher.published == []


def test_the_openapi_document_has_the_submit_body_and_every_error_answer(client):
    doc = client.get("/openapi.json").json()
    submit = doc["paths"]["/v1/runs"]["post"]
    schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert submit["requestBody"]["required"] is True
    assert {"workflow", "input", "run_id"} <= set(schema["properties"]) and schema["required"] == ["workflow"]
    assert {"401", "404", "409", "413", "422", "503"} <= set(submit["responses"])
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            codes = set(op["responses"])
            assert codes & {"400", "401", "404", "422"} or path == "/healthz", (method, path)
            for code in codes - {"200", "201", "202"} if path != "/healthz" else ():
                ref = op["responses"][code]["content"]["application/json"]["schema"]
                assert ref == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_a_method_a_path_does_not_have_is_405_with_the_methods_it_has(client):
    for method, path, allow in (
        ("OPTIONS", "/v1/runs", "GET, POST"),
        ("DELETE", "/v1/runs", "GET, POST"),
        ("PUT", "/v1/runs/run-1", "GET"),
        ("OPTIONS", "/v1/dead-letters/x:0:1/redrive", "POST"),
        ("OPTIONS", "/v1/dead-letters/redrive", "GET, POST"),  # also /v1/dead-letters/{id}
    ):
        reply = client.request(method, path, headers=ACME)
        assert reply.status_code == 405, (method, path)
        assert reply.headers["allow"] == allow, (method, path)
        assert reply.json()["error"]["code"] == "method_not_allowed"


def test_operator_endpoints_say_401_to_an_invalid_key_and_403_to_a_tenants(client):
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        reply = client.get("/v1/dead-letters", headers=headers)
        assert (reply.status_code, reply.headers["www-authenticate"]) == (401, "Bearer"), headers
    assert client.get("/v1/dead-letters", headers=ACME).status_code == 403


def test_health_says_only_ok_or_unavailable_and_never_how_the_database_is_reached(monkeypatch, caplog):
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    settings = Settings(database_url="postgresql://secret_user:pw@db-host.invalid:5432/keel")
    with TestClient(create_app(settings, ApiSettings(), catalog=FILES, publisher=RecordingPublisher())) as c:
        reply = c.get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["checks"] == {"database": "unavailable", "broker": "unavailable"}
    assert "secret_user" not in reply.text and "db-host" not in reply.text and "no broker" not in reply.text
    assert "db-host.invalid" in caplog.text  # the detail is for the operator's log


def test_a_503_after_a_failed_publish_without_a_key_tells_the_client_to_retry_with_one(monkeypatch):
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    with TestClient(create_app(Settings(), ApiSettings(), catalog=FILES, publisher=FailingPublisher())) as c:
        reply = c.post("/v1/runs", headers=ACME, json={"workflow": "outbound_email", "input": LEAD})
    assert (reply.status_code, reply.json()["error"]["code"]) == (503, "broker_unavailable")
    message = reply.json()["error"]["message"]
    assert "Idempotency-Key" in message and "second run" in message


def test_a_submission_carries_its_budget_and_an_absent_one_keeps_old_fingerprints():
    from services.api.submit import RunSubmission, run_request

    with_budget = RunSubmission.model_validate({"workflow": "outbound_email", "budget_usd": 1})
    assert run_request("acme", "run-x", with_budget, 1, True).budget_usd == 1.0
    plain = RunSubmission.model_validate({"workflow": "outbound_email"})
    assert run_request("acme", "run-x", plain, 1, True).budget_usd is None
    # The fingerprint of a body without a budget is what it was before the field existed.
    from keel.idempotency import content_ref

    old_body = {
        "workflow": "outbound_email",
        "input": {},
        "run_id": None,
        "task_id": None,
        "workflow_version": None,
    }
    assert plain.fingerprint() == content_ref(old_body) != with_budget.fingerprint()
    for bad in (-1, "1", True, float("inf")):
        with pytest.raises(ValueError):
            RunSubmission.model_validate({"workflow": "outbound_email", "budget_usd": bad})
