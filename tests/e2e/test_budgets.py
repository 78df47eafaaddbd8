"""Budgets end to end: spend is reserved before it happens, so a hard limit is never crossed — by a looping
agent, by fifty concurrent runs of one tenant, or across a kill -9 of the budget enforcer. What was spent
is judged from the model simulator's own token counts x prices, never from Keel's events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from confluent_kafka import Producer
from harness import BUDGET_TENANTS, kill_and_restart
from helpers import unique, wait_for
from test_agent import TICKET, turns_asked
from test_runs import submit

from keel.contracts import RunRequested
from keel.pricing import cost_decimal
from keel.serde import Serde, registry_client
from keel.topics import RUN_REQUESTS

pytestmark = pytest.mark.e2e


def spent_usd(sims, **where: str) -> Decimal:
    """What the model simulator served (for a tenant or a run), at Keel's prices: the ground truth."""
    usage = httpx.get(f"{sims.urls['model']}/_usage", params=where).json()["by_model"]
    return sum(
        (
            cost_decimal(model, used["prompt_tokens"], used["completion_tokens"])
            for model, used in usage.items()
        ),
        Decimal(0),
    )


def submit_with_budget(stack, workflow: str, data: dict, budget_usd: float) -> str:
    """A run request that lowers the run's budget (the request's budget_usd)."""
    run_id = unique("run")
    req = RunRequested(
        request_id=unique("req"),
        run_id=run_id,
        tenant_id="acme",
        workflow=workflow,
        input_json=json.dumps(data),
        requested_at=datetime.now(UTC),
        budget_usd=budget_usd,
    )
    serde = Serde(registry_client(stack.schema_registry_url))
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(RUN_REQUESTS, key=run_id, value=serde.encode(RUN_REQUESTS, req))
    assert producer.flush(10) == 0
    return run_id


def test_a_looping_agent_is_stopped_by_loop_detection_with_the_evidence(stack, sims, events):
    sims.fault("model", kind="loop", times=100)
    run_id = submit(stack, "support_triage", {"ticket": TICKET})
    assert events.wait_terminal(run_id, 90) == "failed"
    log = events.of(run_id)
    detected = next(e for e in log if e.event == "loop_detected")
    assert detected.call == "turn-3.call-0" and "called 3 times" in (detected.error or "")
    calls = json.loads(detected.output_json or "{}")["calls"]
    assert [c["call"] for c in calls] == ["turn-1.call-0", "turn-2.call-0", "turn-3.call-0"]
    failed = next(e for e in log if e.event == "failed")
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert turns_asked(sims, run_id) == {"turn-1": 1, "turn-2": 1, "turn-3": 1}  # the model's own count


def test_with_loop_detection_off_the_run_budget_stops_the_loop_before_it_is_crossed(stack, sims, events):
    sims.fault("model", kind="loop", times=100)
    limit = 0.004
    run_id = submit_with_budget(stack, "support_triage_unguarded", {"ticket": TICKET}, limit)
    assert events.wait_terminal(run_id, 90) == "failed"
    log = events.of(run_id)
    exceeded = next(e for e in log if e.event == "budget_exceeded")
    assert exceeded.budget is not None and exceeded.budget.scope.startswith("run")
    failed = next(e for e in log if e.event == "failed")
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert "limit would be crossed" in (failed.error or "")
    turns = len(turns_asked(sims, run_id))
    assert 1 <= turns < 8  # stopped by the budget, before max_turns
    assert spent_usd(sims, run=run_id) <= Decimal(str(limit))


def _load(stack, events, tenant: str, runs: int, kill_midway: bool) -> dict[str, str]:
    run_ids = [submit(stack, "budget_note", {"topic": f"item {i}"}, tenant=tenant) for i in range(runs)]
    if kill_midway:
        wait_for(
            lambda: sum("budget_reserved" in events.kinds(r) for r in run_ids) >= 5,
            60,
            "reservations to flow",
        )
        kill_and_restart(stack, "budget")
    return {r: events.wait_terminal(r, 240) for r in run_ids}


@pytest.mark.slow
@pytest.mark.parametrize("kill_midway", [False, True], ids=["steady", "enforcer-killed"])
def test_fifty_concurrent_runs_of_one_tenant_never_pass_its_day_limit(stack, sims, events, kill_midway):
    tenant, limit = BUDGET_TENANTS[1 if kill_midway else 0]
    ends = _load(stack, events, tenant, 50, kill_midway)
    completed = [r for r, s in ends.items() if s == "completed"]
    stopped = [r for r, s in ends.items() if s == "failed"]
    assert completed and stopped, ends  # the limit let some through and stopped the rest
    for run_id in stopped:
        failed = next(e for e in events.of(run_id) if e.event == "failed")
        assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    # The ground truth: what the model served this tenant, at Keel's prices, is within the hard limit.
    assert spent_usd(sims, tenant=tenant) <= Decimal(str(limit))
    served = httpx.get(f"{sims.urls['model']}/_usage", params={"tenant": tenant}).json()["by_model"]
    assert served["sim-small"]["calls"] == len(
        completed
    )  # no run was charged twice, none charged for nothing


def test_costs_grouped_by_step_and_agent_equal_the_cost_facts_on_the_log(stack, sims, events):
    from harness import E2E_ENV

    from keel_ops import cli_runs

    acme = stack.model_copy(update={"api_url": E2E_ENV["KEEL_API_URL"], "api_key": "acme-dev-key"})
    run_id = submit(stack, "support_triage", {"ticket": TICKET})
    assert events.wait_terminal(run_id, 90) == "completed"
    log = events.of(run_id)
    on_log: dict[tuple[str, str], int] = {}
    for e in log:
        if e.cost_micros:
            key = (e.step or "", e.agent_id or "")
            on_log[key] = on_log.get(key, 0) + e.cost_micros
    assert on_log  # model turns and the paid calls cost something

    def grouped() -> dict[tuple[str, str], int]:
        rows = cli_runs.api(acme, "GET", "/v1/costs", params={"group_by": "run,step,agent"})["rows"]
        return {(r["step"], r["agent"] or ""): int(r["cost_micros"]) for r in rows if r["run"] == run_id}

    wait_for(lambda: grouped() == on_log, 30, f"the costs query to equal the log's {on_log}")
