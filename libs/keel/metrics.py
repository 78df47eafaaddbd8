"""Prometheus metrics every service records (docs/observability.md): one definition of each, here.

Facts are counted when their transaction has committed (keel.batchobs), never when they are merely
built: an aborted batch is repeated, and counting it twice would make the figures lie. The names follow
Prometheus' conventions: a `keel_` prefix, the unit in the name, `_total` on counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from keel import events as ev
from keel.breaker import live_breakers
from keel.contracts import DeadLetter, RunEvent

# Step attempts last from milliseconds (a cached read) to minutes (a slow model): buckets across both.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_MICROS_PER_USD = 1_000_000
BREAKER_STATES = ("closed", "half_open", "open")


class Metrics:
    """Every keel_* metric of a process, on one registry (the process-wide one unless a test passes its
    own, so counts from different tests never mix)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.run_events = Counter(
            "keel_run_events_total",
            "Run events this process published (committed), by event kind",
            ["service", "event"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "keel_step_attempt_duration_seconds",
            "How long one attempt's call took (tool: the provider call; llm and agent: the model call), "
            "from the latency on its result fact",
            ["kind", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "keel_retries_total",
            "Retries the scheduler decided (retry_scheduled facts), by failure class",
            ["failure_class"],
            registry=registry,
        )
        self.cases_opened = Counter(
            "keel_quarantine_cases_opened_total",
            "Quarantine cases opened (quarantined, approval_requested facts), by kind",
            ["kind"],
            registry=registry,
        )
        self.cases_resolved = Counter(
            "keel_quarantine_cases_resolved_total",
            "Quarantine cases closed (quarantine_resolved facts)",
            registry=registry,
        )
        self.spend = Counter(
            "keel_spend_dollars_total",
            "Spend in US dollars on the facts this process published (cost_micros), by tenant",
            ["tenant"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "keel_dead_letters_total",
            "Messages this process dead-lettered, by source topic and error class",
            ["service", "topic", "error_class"],
            registry=registry,
        )
        self.transactions = Counter(
            "keel_transactions_total",
            "Kafka transactions this process committed",
            ["service"],
            registry=registry,
        )
        self.aborts = Counter(
            "keel_transaction_aborts_total",
            "Kafka transactions aborted (the batch is rewound and repeated)",
            ["service"],
            registry=registry,
        )
        self.lag = Gauge(
            "keel_consumer_lag_messages",
            "Messages between a partition's committed offset and its high watermark (sampled)",
            ["group", "topic", "partition"],
            registry=registry,
        )
        registry.register(BreakerCollector())

    def committed_facts(self, service: str, facts: Iterable[RunEvent]) -> None:
        """Count facts whose transaction committed."""
        for fact in facts:
            self.run_events.labels(service, fact.event).inc()
            self._fact(fact)

    def committed_dead_letters(self, service: str, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self.dead_letters.labels(service, letter.source_topic, letter.error_class).inc()

    def _fact(self, e: RunEvent) -> None:
        micros = spend_micros(e)
        if micros:
            self.spend.labels(e.tenant_id).inc(micros / _MICROS_PER_USD)
        if e.event == ev.RETRY_SCHEDULED and e.retry is not None:
            self.retries.labels(e.retry.failure_class).inc()
        elif e.event in (ev.QUARANTINED, ev.APPROVAL_REQUESTED):
            self.cases_opened.labels(e.event).inc()
        elif e.event == ev.QUARANTINE_RESOLVED:
            self.cases_resolved.inc()
        timed = attempt_latency(e)
        if timed is not None:
            kind, outcome, seconds = timed
            self.attempt_seconds.labels(kind, outcome).observe(seconds)


def spend_micros(e: RunEvent) -> int:
    """A fact's cost in micro-dollars, by the projector's rule (services/projector/values.py): its own
    cost_micros, else its float estimate. Facts never repeat a cost, so the sum is the spend."""
    if e.cost_micros is not None:
        return e.cost_micros
    return round(e.cost_usd_est * _MICROS_PER_USD) if e.cost_usd_est else 0


def attempt_latency(e: RunEvent) -> tuple[str, str, float] | None:
    """(kind, outcome, seconds) of a fact that ends an attempt's call and says how long it took."""
    tool = e.tool
    if e.event in (ev.TOOL_SUCCEEDED, ev.TOOL_FAILED) and tool is not None and tool.latency_ms is not None:
        outcome = "succeeded" if e.event == ev.TOOL_SUCCEEDED else "failed"
        return "tool", outcome, tool.latency_ms / 1000
    if e.event == ev.MODEL_CALLED and e.model_call is not None and e.model_call.latency_ms is not None:
        # An agent's turns carry the turn in `call`; a plain llm step has none.
        return ("agent" if e.call else "llm"), "succeeded", e.model_call.latency_ms / 1000
    return None


class BreakerCollector(Collector):
    """The state of every circuit breaker in this process, read when scraped (never stale)."""

    def describe(self) -> list[Any]:
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        snapshots: dict[str, dict[str, Any]] = {}
        for breakers in live_breakers():
            for name, snap in breakers.snapshot().items():
                snapshots[name] = _merged(snapshots.get(name), snap)
        return self._families(snapshots)

    @staticmethod
    def _families(snapshots: dict[str, dict[str, Any]]) -> Iterator[Any]:
        state = GaugeMetricFamily(
            "keel_circuit_breaker_state",
            "1 for the state each circuit breaker is in (closed, half_open, open), 0 for the others",
            labels=["breaker", "state"],
        )
        opens = CounterMetricFamily(
            "keel_circuit_breaker_opens", "Times a circuit breaker opened", labels=["breaker"]
        )
        rejections = CounterMetricFamily(
            "keel_circuit_breaker_rejections",
            "Calls a circuit breaker refused (nothing sent)",
            labels=["breaker"],
        )
        for name, snap in sorted(snapshots.items()):
            for s in BREAKER_STATES:
                state.add_metric([name, s], 1.0 if snap["state"] == s else 0.0)
            opens.add_metric([name], snap["opens_total"])
            rejections.add_metric([name], snap["rejections_total"])
        yield from (state, opens, rejections)


# A breaker of one name in several registries of a process (a process that calls a provider from more
# than one place): the worst state is its state, and the counts add up.
_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


def _merged(seen: dict[str, Any] | None, snap: dict[str, Any]) -> dict[str, Any]:
    if seen is None:
        return snap
    worst = max(seen, snap, key=lambda s: _SEVERITY.get(s["state"], 0))
    return {
        **worst,
        "opens_total": seen["opens_total"] + snap["opens_total"],
        "rejections_total": seen["rejections_total"] + snap["rejections_total"],
    }


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The process-wide metrics, created on first use."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics
