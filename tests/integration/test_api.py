"""The HTTP API against the real broker and database: submit, idempotency, tenancy, run and timeline reads."""

from __future__ import annotations

import json

import apistack
import pytest
from apistack import ACME, GLOBEX, INPUT
from helpers import read_topic, unique
from unit.agent_stories import AGENT, ANSWER, STEP, support_triage

pytestmark = pytest.mark.integration
api = apistack.api  # the fixture


def test_a_submitted_run_is_a_decodable_run_request_on_the_topic(api):
    reply = api.client.post(
        "/v1/runs", headers=ACME, json={"workflow": "outbound_email", "input": INPUT, "task_id": "lead-7"}
    )
    assert reply.status_code == 202, reply.text
    run_id = reply.json()["run_id"]
    assert reply.json() == {"run_id": run_id, "keel_run_id": run_id, "status": "accepted"}
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
    key = unique("order")
    headers = {**ACME, "Idempotency-Key": key}
    body = {"workflow": "outbound_email", "input": INPUT}
    first, second = (api.client.post("/v1/runs", headers=headers, json=body) for _ in range(2))
    assert first.status_code == second.status_code == 202
    assert first.json()["run_id"] == second.json()["run_id"]
    other = api.client.post("/v1/runs", headers={**GLOBEX, "Idempotency-Key": key}, json=body)
    assert other.json()["run_id"] != first.json()["run_id"]  # keys are per tenant
    published = api.requests(expect=2)
    # Published once: the repeat found the request acknowledged already (a re-publish would be a no-op).
    assert sorted(r.run_id for _, r in published) == sorted([first.json()["run_id"], other.json()["run_id"]])
    assert {r.request_id for _, r in published} == {f"{r.run_id}:request" for _, r in published}


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
    # Client run ids are per tenant: globex naming a run like acme's makes globex's own run, and acme's
    # stays invisible to it.
    named = api.client.post(
        "/v1/runs", headers=GLOBEX, json={"workflow": "outbound_email", "input": INPUT, "run_id": theirs}
    )
    assert named.status_code == 202 and named.json()["run_id"] == theirs
    assert named.json()["keel_run_id"] != theirs and "acme" not in named.text
    assert api.client.get(f"/v1/runs/{theirs}", headers=GLOBEX).status_code == 404  # not acme's run
    [(_, request)] = api.requests(expect=1)
    assert (request.tenant_id, request.run_id) == ("globex", named.json()["keel_run_id"])
    assert api.client.get(f"/v1/runs/{theirs}", headers=ACME).json()["status"] == "completed"


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


def test_an_agent_run_reads_with_its_turns_cost_and_sub_step_attempts_and_events(api):
    story = support_triage(unique("run"))
    api.project(story.events)
    run = api.client.get(f"/v1/runs/{story.run_id}", headers=ACME).json()
    [triage] = run["steps"]
    assert (triage["step"], triage["kind"], triage["status"], triage["output"]) == (
        STEP,
        "agent",
        "committed",
        ANSWER,
    )
    assert (triage["agent_id"], triage["turns"]) == (AGENT, 4)
    assert triage["cost_usd"] == pytest.approx(run["cost_usd"]) and run["cost_usd"] > 0
    assert [(a["call"], a["attempt"], a["status"]) for a in triage["attempts"]] == [
        ("turn-1", 1, "committed"),
        ("turn-1.call-0", 1, "committed"),
        ("turn-2", 1, "failed"),
        ("turn-2", 2, "committed"),
        ("turn-2.call-0", 1, "failed"),
        ("turn-2.call-0", 2, "committed"),
        ("turn-3", 1, "committed"),
        ("turn-3.call-0", 1, "committed"),
        ("turn-3.call-1", 1, "committed"),
        ("turn-4", 1, "committed"),
    ]
    events = api.client.get(f"/v1/runs/{story.run_id}/events", headers=ACME).json()["events"]
    assert [(e["event_id"], e["call"]) for e in events] == [(e.event_id, e.call) for e in story.events]
    turn_2 = api.client.get(f"/v1/runs/{story.run_id}/events?call=turn-2", headers=ACME).json()["events"]
    assert {e["call"] for e in turn_2} == {"turn-2", "turn-2.call-0", "turn-2.call-1"}
    assert len(turn_2) == sum(1 for e in story.events if (e.call or "").startswith("turn-2"))
    bad = api.client.get(f"/v1/runs/{story.run_id}/events?call=turn-%25", headers=ACME)
    assert bad.status_code in (400, 422)
    plain = api.client.get(f"/v1/runs/{api.acme_runs[0]}", headers=ACME).json()
    assert {a["call"] for s in plain["steps"] for a in s["attempts"]} == {None}
    assert {s["turns"] for s in plain["steps"]} == {None}


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
    for bad in ("limit=0", "status=%00", "workflow=a%00b", "status=x&cursor=" + "a" * 2000):
        reply = api.client.get(f"/v1/runs?{bad}", headers=ACME)
        assert (reply.status_code, reply.json()["error"]["code"]) == (400, "invalid_parameter"), bad


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
