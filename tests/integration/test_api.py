"""The HTTP API against the real broker and database: submit, idempotency, tenancy, run and timeline reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from fastapi.testclient import TestClient
from helpers import make_topics, read_topic, unique
from unit.test_projection_core import completed_after_retry, failed, fan_out, positioned

from keel import db
from keel.contracts import RunRequested
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from services.api.app import create_app
from services.api.config import ApiSettings
from services.projector.schema import create_schema, drop_schema
from services.projector.store import ProjectionStore

pytestmark = pytest.mark.integration
ACME = {"Authorization": "Bearer acme-dev-key"}
GLOBEX = {"Authorization": "Bearer globex-dev-key"}
INPUT = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


@dataclass
class Api:
    client: TestClient
    topic: str
    serde: Serde
    acme_runs: list[str]  # seeded: completed (retry), fan-out, completed; newest last
    globex_run: str

    def requests(self, expect: int) -> list[tuple[str, RunRequested]]:
        msgs = read_topic(self.client.app.state.deps.settings, self.topic, expect=expect)  # type: ignore[attr-defined]
        return [(m.key().decode(), self.serde.decode(self.topic, m.value())) for m in msgs]


@pytest.fixture
def api(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    topic, schema = unique("test.run-requests"), f"api_{uuid.uuid4().hex[:10]}"
    make_topics(stack, topic, partitions=3)
    client = registry_client(stack.schema_registry_url)
    register_contracts(client, {topic: "run_request"})
    stories = [
        completed_after_retry(unique("run")),
        fan_out(unique("run")),
        completed_after_retry(unique("run")),
    ]
    other = failed(unique("run"), tenant="globex")
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        create_schema(conn, schema)
        events = [e for s in [*stories, other] for e in s.events]
        ProjectionStore(conn, schema).write(positioned(events, topic="seed"), {("seed", 0): None})
        settings = ApiSettings(projection_schema=schema, run_requests_topic=topic)
        try:
            with TestClient(create_app(stack, settings)) as http:
                yield Api(
                    http,
                    topic,
                    Serde(client, {topic: "run_request"}),
                    [s.run_id for s in stories],
                    other.run_id,
                )
        finally:
            drop_schema(conn, schema)


def test_a_submitted_run_is_a_decodable_run_request_on_the_topic(api):
    reply = api.client.post(
        "/v1/runs", headers=ACME, json={"workflow": "outbound_email", "input": INPUT, "task_id": "lead-7"}
    )
    assert reply.status_code == 202, reply.text
    run_id = reply.json()["run_id"]
    assert reply.json() == {"run_id": run_id, "status": "accepted"}
    assert reply.headers["location"] == f"/v1/runs/{run_id}"
    [(key, request)] = api.requests(expect=1)
    assert key == run_id == request.run_id
    assert (request.tenant_id, request.workflow, request.workflow_version, request.task_id) == (
        "acme",
        "outbound_email",
        1,
        "lead-7",
    )
    assert json.loads(request.input_json or "") == INPUT and request.input_ref.startswith("sha256:")


def test_a_repeated_idempotency_key_gives_the_same_run(api):
    headers = {**ACME, "Idempotency-Key": "order-42"}
    body = {"workflow": "outbound_email", "input": INPUT}
    first, second = (api.client.post("/v1/runs", headers=headers, json=body) for _ in range(2))
    assert first.status_code == second.status_code == 202
    assert first.json()["run_id"] == second.json()["run_id"]
    other = api.client.post("/v1/runs", headers={**GLOBEX, "Idempotency-Key": "order-42"}, json=body)
    assert other.json()["run_id"] != first.json()["run_id"]  # keys are per tenant
    published = api.requests(expect=3)
    assert [r.run_id for _, r in published].count(first.json()["run_id"]) == 2
    assert len({r.request_id for _, r in published if r.run_id == first.json()["run_id"]}) == 1


def test_unknown_workflows_invalid_input_and_missing_keys_are_refused(api):
    reply = api.client.post("/v1/runs", headers=ACME, json={"workflow": "nope", "input": {}})
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "unknown_workflow")
    reply = api.client.post(
        "/v1/runs", headers=ACME, json={"workflow": "outbound_email", "input": {"lead_email": "x"}}
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_input")
    reply = api.client.post(
        "/v1/runs", headers=ACME, json={"workflow": "outbound_email", "workflow_version": 9, "input": INPUT}
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "unknown_workflow")
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        assert (
            api.client.post("/v1/runs", headers=headers, json={"workflow": "outbound_email"}).status_code
            == 401
        )
        assert api.client.get(f"/v1/runs/{api.acme_runs[0]}", headers=headers).status_code == 401
    assert read_topic(api.client.app.state.deps.settings, api.topic) == []  # nothing refused was published


def test_a_tenant_can_neither_read_nor_take_over_another_tenants_run(api):
    theirs, unknown = api.acme_runs[0], "run-does-not-exist"
    for path in (f"/v1/runs/{theirs}", f"/v1/runs/{theirs}/events"):
        denied = api.client.get(path, headers=GLOBEX)
        missing = api.client.get(path.replace(theirs, unknown), headers=GLOBEX)
        assert denied.status_code == missing.status_code == 404
        assert denied.json()["error"]["code"] == missing.json()["error"]["code"] == "run_not_found"
    listing = api.client.get("/v1/runs", headers=GLOBEX).json()["runs"]
    assert [r["run_id"] for r in listing] == [api.globex_run]
    taken = api.client.post(
        "/v1/runs", headers=GLOBEX, json={"workflow": "outbound_email", "input": INPUT, "run_id": theirs}
    )
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "run_id_conflict")
    assert "acme" not in taken.text and "outbound_email" not in taken.json()["error"]["message"]
    changed = api.client.post(
        "/v1/runs",
        headers=ACME,
        json={"workflow": "outbound_email", "input": {**INPUT, "lead_name": "Eve"}, "run_id": theirs},
    )
    assert (changed.status_code, changed.json()["error"]["code"]) == (409, "request_conflict")
    again = api.client.post(
        "/v1/runs", headers=ACME, json={"workflow": "outbound_email", "input": INPUT, "run_id": theirs}
    )
    assert again.status_code == 202  # the same request again: accepted, a no-op for the scheduler


def test_a_run_reads_with_steps_attempts_commit_ids_and_its_timeline_in_log_order(api):
    run_id = api.acme_runs[0]
    run = api.client.get(f"/v1/runs/{run_id}", headers=ACME).json()
    assert (run["status"], run["workflow"], run["workflow_version"], run["input"]) == (
        "completed",
        "outbound_email",
        1,
        INPUT,
    )
    assert run["cost_usd"] == pytest.approx(0.0021) and run["created_at"] < run["ended_at"]
    assert [s["step"] for s in run["steps"]] == ["draft_email", "log_to_crm", "send_email"]
    send = run["steps"][2]
    assert (send["status"], send["external_id"]) == ("committed", "msg-1")
    assert [(a["attempt"], a["status"], a["failure_class"]) for a in send["attempts"]] == [
        (1, "failed", "transient"),
        (2, "committed", None),
    ]
    assert send["attempts"][0]["error"] == "transient: 503 from provider"

    timeline = api.client.get(f"/v1/runs/{run_id}/events", headers=ACME).json()
    kinds = [e["kind"] for e in timeline["events"]]
    assert kinds[:3] == ["created", "scheduled", "started"] and kinds[-2:] == ["completed", "started"]
    failure = next(e for e in timeline["events"] if e["kind"] == "tool_failed")
    assert (failure["step"], failure["attempt"], failure["failure_class"], failure["source"]) == (
        "send_email",
        1,
        "transient",
        "adapters",
    )
    assert failure["idempotency_key"].startswith("acme|outbound_email|")
    commits = [e["external_id"] for e in timeline["events"] if e["kind"] == "step_committed"]
    assert commits == [None, "crm-1", "msg-1"]
    assert [e["offset"] for e in timeline["events"]] == sorted(e["offset"] for e in timeline["events"])


def test_runs_list_newest_first_with_filters_and_pages(api):
    first = api.client.get("/v1/runs?limit=2", headers=ACME).json()
    assert len(first["runs"]) == 2 and first["next_cursor"]
    rest = api.client.get(f"/v1/runs?limit=2&cursor={first['next_cursor']}", headers=ACME).json()
    assert rest["next_cursor"] is None
    ids = [r["run_id"] for r in first["runs"] + rest["runs"]]
    assert sorted(ids) == sorted(api.acme_runs) and len(ids) == 3
    created = [r["created_at"] for r in first["runs"] + rest["runs"]]
    assert created == sorted(created, reverse=True)
    enrich = api.client.get("/v1/runs?workflow=lead_enrichment&status=completed", headers=ACME).json()["runs"]
    assert [r["run_id"] for r in enrich] == [api.acme_runs[1]]
    assert api.client.get("/v1/runs?cursor=garbage", headers=ACME).json()["error"]["code"] == "invalid_cursor"
    assert api.client.get("/v1/runs?limit=0", headers=ACME).status_code == 422


def test_workflows_and_health(api):
    flows = api.client.get("/v1/workflows", headers=ACME).json()["workflows"]
    outbound = next(w for w in flows if w["name"] == "outbound_email")
    assert outbound["version"] == 1 and [s["name"] for s in outbound["steps"]] == [
        "draft_email",
        "log_to_crm",
        "send_email",
    ]
    health = api.client.get("/healthz")
    assert health.status_code == 200 and health.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok"},
    }
