"""The keel_* metrics: what each fact counts, only once committed, and where each instance serves them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from keel.batchobs import BatchObserver
from keel.breaker import BreakerPolicy, BreakerRegistry, Permit
from keel.contracts import DeadLetter, ModelDetail, RetryDetail, RunEvent, ToolDetail
from keel.metrics import Metrics
from keel.metricsserver import MetricsSettings, port_for
from keel.txtypes import Output


def fact(kind: str, **fields: object) -> RunEvent:
    base: dict[str, object] = {
        "event_id": f"e-{kind}",
        "run_id": "run-1",
        "tenant_id": "acme",
        "workflow": "wf",
        "step": "send",
        "attempt": 1,
        "event": kind,
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "trace_id": "t" * 32,
    }
    return RunEvent(**{**base, **fields})  # type: ignore[arg-type]


RETRY: dict = {"delay_ms": 5, "reason": "5xx", "fire_at": datetime(2026, 1, 1, tzinfo=UTC)}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_facts_count_by_kind_retry_class_spend_cases_and_latency(registry):
    m = Metrics(registry)
    m.committed_facts(
        "scheduler",
        [
            fact("retry_scheduled", retry=RetryDetail(next_attempt=2, failure_class="transient", **RETRY)),
            fact("quarantined"),
            fact("approval_requested"),
            fact("quarantine_resolved"),
        ],
    )
    m.committed_facts(
        "adapters",
        [
            fact("tool_called", cost_micros=2_500),
            fact("tool_succeeded", tool=ToolDetail(tool="email@1", latency_ms=120)),
            fact("tool_failed", tool=ToolDetail(tool="email@1", latency_ms=5_000, failure_class="transient")),
        ],
    )
    m.committed_facts(
        "executor",
        [
            fact("model_called", cost_micros=1_000_000, model_call=ModelDetail(latency_ms=800)),
            fact("model_called", call="turn-1", cost_usd_est=0.25, model_call=ModelDetail(latency_ms=40)),
            fact("model_called", tenant_id="globex", cost_micros=7, model_call=ModelDetail()),
        ],
    )
    assert value(registry, "keel_run_events_total", service="scheduler", event="retry_scheduled") == 1
    assert value(registry, "keel_run_events_total", service="executor", event="model_called") == 3
    assert value(registry, "keel_retries_total", failure_class="transient") == 1
    assert value(registry, "keel_quarantine_cases_opened_total", kind="quarantined") == 1
    assert value(registry, "keel_quarantine_cases_opened_total", kind="approval_requested") == 1
    assert value(registry, "keel_quarantine_cases_resolved_total") == 1
    # cost_micros when there, the float estimate otherwise (the projector's rule)
    assert value(registry, "keel_spend_dollars_total", tenant="acme") == pytest.approx(1.2525)
    assert value(registry, "keel_spend_dollars_total", tenant="globex") == pytest.approx(7e-6)
    hist = "keel_step_attempt_duration_seconds"
    assert value(registry, f"{hist}_count", kind="tool", outcome="succeeded") == 1
    assert value(registry, f"{hist}_sum", kind="tool", outcome="failed") == 5.0
    assert value(registry, f"{hist}_bucket", kind="tool", outcome="succeeded", le="0.25") == 1
    assert value(registry, f"{hist}_count", kind="llm", outcome="succeeded") == 1
    assert value(registry, f"{hist}_count", kind="agent", outcome="succeeded") == 1  # a turn: `call`


def letter(error_class: str) -> DeadLetter:
    return DeadLetter(
        dead_letter_id="in:0:1",
        source_topic="in",
        source_partition=0,
        source_offset=1,
        key=None,
        value=b"x",
        reason="bad",
        error_class=error_class,
        failed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_observer_counts_only_what_committed(registry):
    obs = BatchObserver("ledger", Metrics(registry))
    committed = fact("step_committed")
    obs.staged([Output("keel.run-events", "run-1", committed), Output("changelog", "k", b"raw")])
    obs.dead_letter(letter("undecodable"))
    obs.aborted()  # the turn is repeated: nothing of it counts, the abort does
    assert value(registry, "keel_run_events_total", service="ledger", event="step_committed") == 0
    dead = {"service": "ledger", "topic": "in", "error_class": "undecodable"}
    assert value(registry, "keel_dead_letters_total", **dead) == 0
    assert value(registry, "keel_transaction_aborts_total", service="ledger") == 1
    obs.staged([Output("keel.run-events", "run-1", committed)])
    obs.dead_letter(letter("undecodable"))
    obs.committed()
    obs.committed()  # nothing staged since: counts nothing twice
    assert value(registry, "keel_run_events_total", service="ledger", event="step_committed") == 1
    assert value(registry, "keel_dead_letters_total", **dead) == 1
    assert value(registry, "keel_transactions_total", service="ledger") == 2
    obs.staged([Output("keel.run-events", "run-1", committed)])
    obs.dropped()
    obs.committed()
    assert value(registry, "keel_run_events_total", service="ledger", event="step_committed") == 1


def test_breaker_states_are_read_when_scraped(registry):
    # Breaker names of their own: every registry alive in the process is read (other tests' too).
    Metrics(registry)
    breakers = BreakerRegistry(BreakerPolicy(failure_threshold=1, open_ms=60_000))
    breaker = breakers.get("email-scraped")
    breakers.get("crm")
    permit = breaker.before_call(0)
    assert isinstance(permit, Permit)
    breaker.record(permit, False, "transient", 1)
    breaker.before_call(2)  # rejected while open
    assert value(registry, "keel_circuit_breaker_state", breaker="email-scraped", state="open") == 1
    assert value(registry, "keel_circuit_breaker_state", breaker="email-scraped", state="closed") == 0
    assert value(registry, "keel_circuit_breaker_state", breaker="crm", state="closed") == 1
    assert value(registry, "keel_circuit_breaker_opens_total", breaker="email-scraped") == 1
    assert value(registry, "keel_circuit_breaker_rejections_total", breaker="email-scraped") == 1


def test_the_metric_families_and_their_labels(registry):
    Metrics(registry)
    labels = {
        "keel_run_events": ("service", "event"),
        "keel_step_attempt_duration_seconds": ("kind", "outcome"),
        "keel_retries": ("failure_class",),
        "keel_quarantine_cases_opened": ("kind",),
        "keel_quarantine_cases_resolved": (),
        "keel_spend_dollars": ("tenant",),
        "keel_dead_letters": ("service", "topic", "error_class"),
        "keel_transactions": ("service",),
        "keel_transaction_aborts": ("service",),
        "keel_consumer_lag_messages": ("group", "topic", "partition"),
    }
    families = {f.name: f for f in registry.collect()}
    for name, want in labels.items():
        assert name in families, name
        assert getattr(registry._names_to_collectors[_sample(families[name])], "_labelnames", ()) == want
    assert {"keel_circuit_breaker_state", "keel_circuit_breaker_opens"} <= families.keys()


def _sample(family: object) -> str:
    name, kind = family.name, family.type  # type: ignore[attr-defined]
    return f"{name}_total" if kind == "counter" else name


@pytest.mark.parametrize(
    ("env", "service", "instance", "port"),
    [
        ({}, "ledger", "0", None),  # off by default: nothing binds a port nobody asked for
        ({"port": 0}, "ledger", "0", 0),
        ({"port": 9999, "base_port": 9400}, "ledger", "0", 9999),  # the exact port wins
        ({"base_port": 9400}, "scheduler", "0", 9400),
        ({"base_port": 9400}, "ledger", "2", 9432),
        ({"base_port": 19400}, "projector", None, 19450),
        ({"base_port": 9400}, "adapters", "p-1", None),  # no number: no derived port
        ({"base_port": 9400}, "worker-refunds", "0", None),  # no slot
        ({"base_port": 9400}, "budget", "10", None),  # past the slot's ten instances
    ],
)
def test_each_instance_derives_a_port_of_its_own(env, service, instance, port):
    assert port_for(MetricsSettings(**env), service, instance) == port


def test_instances_of_every_service_on_one_machine_never_share_a_port():
    settings = MetricsSettings(base_port=9400)
    from keel.metricsserver import SLOTS

    ports = [port_for(settings, s, str(i)) for s in SLOTS for i in range(10)]
    assert len(set(ports)) == len(ports)


def test_the_projectors_error_rows_count_as_its_dead_letters_once_written():
    from prometheus_client import REGISTRY

    from services.projector.core import Position, error_projection
    from services.projector.service import _count_errors

    topic = "keel.run-events.test-count"
    labels = {"service": "projector", "topic": topic, "error_class": "undecodable"}
    rows = [error_projection(Position(topic, 0, 5), "cannot decode", "undecodable", None, b"x")]
    _count_errors(rows, {(topic, 0): 3})  # the stored offset had moved: nothing was written
    assert (REGISTRY.get_sample_value("keel_dead_letters_total", labels) or 0) == 0
    _count_errors(rows, {(topic, 0): 6})
    assert REGISTRY.get_sample_value("keel_dead_letters_total", labels) == 1


def test_a_breaker_in_two_registries_reports_its_worst_state_and_the_sum_of_its_counts(registry):
    Metrics(registry)
    quiet = BreakerRegistry(BreakerPolicy(failure_threshold=1, open_ms=60_000))
    quiet.get("email-twice")  # closed: created later or earlier, it must not hide the open one
    tripped = BreakerRegistry(BreakerPolicy(failure_threshold=1, open_ms=60_000))
    breaker = tripped.get("email-twice")
    permit = breaker.before_call(0)
    assert isinstance(permit, Permit)
    breaker.record(permit, False, "transient", 1)
    again = BreakerRegistry(BreakerPolicy(failure_threshold=1, open_ms=60_000))
    again.get("email-twice")
    assert value(registry, "keel_circuit_breaker_state", breaker="email-twice", state="open") == 1
    assert value(registry, "keel_circuit_breaker_opens_total", breaker="email-twice") == 1


def test_merging_breaker_snapshots_keeps_the_worst_state_whatever_the_order():
    from keel.metrics import _merged

    closed = {"name": "email", "state": "closed", "opens_total": 0, "rejections_total": 0}
    opened = {"name": "email", "state": "open", "opens_total": 1, "rejections_total": 2}
    for first, second in ((closed, opened), (opened, closed)):
        merged = _merged(_merged(None, first), second)
        assert merged["state"] == "open" and merged["opens_total"] == 1 and merged["rejections_total"] == 2
