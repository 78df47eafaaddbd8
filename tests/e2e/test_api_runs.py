"""The API end to end: the demo scenario over HTTP, tenants apart, projections rebuilt from topics."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from harness import E2E_ENV, rebuilt_projection_differences
from helpers import unique

from keel.settings import Settings
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}
URL = E2E_ENV["KEEL_API_URL"]


@pytest.fixture
def acme(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "acme-dev-key"})


@pytest.fixture
def globex(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "globex-dev-key"})


def test_the_demo_scenario_through_the_api(acme, sims, keel):
    sims.fault("email", kind="accept_then_timeout", ms=2500)
    key = unique("idem")
    run_id = cli_runs.submit(acme, "outbound_email", LEAD, idempotency_key=key)
    assert cli_runs.submit(acme, "outbound_email", LEAD, idempotency_key=key) == run_id  # same request
    run = cli_runs.wait(acme, run_id, 60, quiet=True)
    assert run["status"] == "completed"
    steps = {s["step"]: s for s in run["steps"]}
    send = steps["send_email"]
    assert [a["status"] for a in send["attempts"]][-1] == "committed"
    assert send["attempts"][0]["failure_class"] == "unknown_outcome" and len(send["attempts"]) == 2
    assert send["external_id"].startswith("msg_")

    events = cli_runs.api(acme, "GET", f"/v1/runs/{run_id}/events")["events"]
    send_kinds = [e["event"] for e in events if e["step"] == "send_email"]
    for kind in ("tool_called", "tool_failed", "retry_scheduled", "tool_succeeded", "step_committed"):
        assert kind in send_kinds
    assert events[-1]["event"] == "completed"
    assert sims.stats("email")["deliveries"] == 1
    assert "retry #2" in cli_runs.format_timeline(events)


def test_a_tenant_neither_sees_nor_submits_as_another(acme, globex, sims, keel):
    run_id = cli_runs.submit(acme, "outbound_email", LEAD)
    assert cli_runs.wait(acme, run_id, 60, quiet=True)["status"] == "completed"
    with pytest.raises(cli_runs.ApiError, match="404"):
        cli_runs.api(globex, "GET", f"/v1/runs/{run_id}")
    with pytest.raises(cli_runs.ApiError, match="404"):
        cli_runs.api(globex, "GET", f"/v1/runs/{run_id}/events")
    with pytest.raises(cli_runs.ApiError, match="422"):  # ids of Keel's own form are not for clients
        cli_runs.submit(globex, "outbound_email", LEAD, run_id=run_id)
    assert run_id not in [r["run_id"] for r in cli_runs.api(globex, "GET", "/v1/runs")["runs"]]
    assert run_id in [r["run_id"] for r in cli_runs.api(acme, "GET", "/v1/runs")["runs"]]
    assert httpx.get(f"{URL}/v1/runs/{run_id}").status_code == 401
    assert httpx.get(f"{URL}/v1/runs", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_client_run_ids_are_per_tenant_and_answer_under_the_clients_id(acme, globex, sims, keel):
    name = unique("lead")
    assert cli_runs.submit(acme, "outbound_email", LEAD, run_id=name) == name
    assert cli_runs.submit(globex, "outbound_email", LEAD, run_id=name) == name  # its own run, no squatting
    mine = cli_runs.wait(acme, name, 60, quiet=True)
    theirs = cli_runs.wait(globex, name, 60, quiet=True)
    assert mine["status"] == theirs["status"] == "completed"
    assert mine["run_id"] == theirs["run_id"] == name and mine["keel_run_id"] != theirs["keel_run_id"]
    events = cli_runs.api(acme, "GET", f"/v1/runs/{name}/events")["events"]
    assert {e["body"]["tenant_id"] for e in events} == {"acme"}
    assert sims.stats("email")["deliveries"] == 2  # one per tenant's run


def test_projections_rebuilt_from_the_topics_equal_the_live_ones(stack, acme, sims, keel):
    runs = [cli_runs.submit(acme, "outbound_email", LEAD) for _ in range(3)]
    runs.append(
        cli_runs.submit(acme, "lead_enrichment", {"lead_email": "a@b.test", "lead_name": "A", "company": "B"})
    )
    for run_id in runs:
        assert cli_runs.wait(acme, run_id, 60, quiet=True)["status"] == "completed"
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        diff, events = rebuilt_projection_differences(stack, conn)
    assert diff == {}
    assert events >= sum(1 for _ in runs) * 5
