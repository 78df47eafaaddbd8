"""Every service of the stack answers /metrics, and the figures follow real runs (docs/observability.md).

The harness starts each service with KEEL_METRICS_BASE_PORT=19400: instance 0 of the service in slot S
serves on 19400 + 10 x S; the API serves /metrics on its own port.
"""

from __future__ import annotations

import httpx
import pytest
from harness import CORE_SERVICES, E2E_ENV
from helpers import unique, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_runs import LEAD, submit
from test_yaml_tool import REFUND

from keel.metricsserver import INSTANCES_PER_SLOT, SLOTS

pytestmark = pytest.mark.e2e
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def url_of(service: str) -> str:
    if service == "api":
        return f"{E2E_ENV['KEEL_API_URL']}/metrics"
    port = int(E2E_ENV["KEEL_METRICS_BASE_PORT"]) + INSTANCES_PER_SLOT * SLOTS[service]
    return f"http://127.0.0.1:{port}/metrics"


def scrape(service: str) -> tuple[Samples, set[str]]:
    """(samples, family names) of one service's /metrics."""
    response = httpx.get(url_of(service), timeout=5.0)
    response.raise_for_status()
    families = list(text_string_to_metric_families(response.text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return samples, {f.name for f in families}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_every_service_answers_metrics(keel):
    for service in (*CORE_SERVICES, "api"):
        _, families = scrape(service)
        assert "keel_transaction_aborts" in families, service
        assert "keel_circuit_breaker_state" in families, service
    assert "keel_quarantine_cases_open" in scrape("api")[1]


def test_the_figures_follow_a_run_with_a_retry(stack, sims, events):
    before = {s: scrape(s)[0] for s in CORE_SERVICES}
    sims.fault("email", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "outbound_email", LEAD)
    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    commits = sum(1 for e in log if e.event == "step_committed" and e.source == "ledger")
    spend_micros = sum(e.cost_micros or 0 for e in log)
    assert commits >= 2 and spend_micros > 0

    def grew(check: tuple[str, str, float, dict[str, str]]) -> bool:
        svc, name, by, labels = check
        return total(scrape(svc)[0], name, **labels) - total(before[svc], name, **labels) >= by - 1e-9

    # Facts count once their transaction commits, which is before the events log sees them: no wait
    # would be needed, but a scrape must not race the loop's bookkeeping, so wait with a deadline.
    checks: list[tuple[str, str, float, dict[str, str]]] = [
        ("ledger", "keel_run_events_total", commits, {"service": "ledger", "event": "step_committed"}),
        ("scheduler", "keel_retries_total", 1, {"failure_class": "unknown_outcome"}),
        ("adapters", "keel_step_attempt_duration_seconds_count", 2, {"kind": "tool"}),
        ("executor", "keel_step_attempt_duration_seconds_count", 1, {"kind": "llm"}),
        ("executor", "keel_spend_dollars_total", spend_micros / 1e6, {"tenant": "acme"}),
        ("scheduler", "keel_transactions_total", 1, {"service": "scheduler"}),
    ]
    for check in checks:
        wait_for(lambda c=check: grew(c), 10, f"{check} to grow")  # type: ignore[misc]
    lag = [dict(ls) for n, ls in scrape("projector")[0] if n == "keel_consumer_lag_messages"]
    assert {(x["group"], x["topic"]) for x in lag} == {
        ("keel.projector", "keel.run-events"),
        ("keel.projector", "keel.control"),  # the audit trail's commands
        ("keel.projector", "keel.audit"),  # and its redrives and registrations
    }


def test_open_quarantine_cases_come_from_the_projection(stack, sims, events):
    tenant = unique("metrics-t")

    def open_cases() -> float:
        return total(scrape("api")[0], "keel_quarantine_cases_open", tenant=tenant)

    assert open_cases() == 0
    sims.fault("payments", kind="null_field", field="refund_id")
    run_id = submit(stack, "refund_once", REFUND, tenant=tenant)
    assert events.wait_terminal(run_id) == "quarantined"
    wait_for(lambda: open_cases() == 1, 20, "the API to count the quarantined run")
    wait_for(
        lambda: total(scrape("scheduler")[0], "keel_quarantine_cases_opened_total", kind="quarantined") >= 1,
        10,
        "the scheduler to count the case opened",
    )
