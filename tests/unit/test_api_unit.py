"""API keys, run ids from idempotency keys, cursors, and the API's answers that need no database or broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from keel.apikeys import ApiKeyConfigError, ApiKeys, hash_key, tenant_for
from keel.contracts import RunRequested
from keel.settings import Settings
from services.api.app import create_app
from services.api.config import ApiSettings
from services.api.queries import BadCursor, decode_cursor, encode_cursor
from services.api.submit import Publisher, run_id_for


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
        ('["a"]', "must be a JSON object"),
        ('{"acme": "sha256:00"}', "must map to a list"),
        ('{"acme": ["plain-key"]}', "is not 'sha256:<64 hex digits>'"),
        (json.dumps({"a": [hash_key("x")], "b": [hash_key("x")]}), "listed for 'a' and 'b'"),
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


@pytest.fixture
def client(monkeypatch):
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    api = ApiSettings(max_body_bytes=2048)
    with TestClient(create_app(Settings(), api, publisher=RecordingPublisher())) as c:
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
