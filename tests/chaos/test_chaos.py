"""The chaos proof: exactly-once effect under at-least-once execution, with kill -9 everywhere.

Two instances of every scaling service; runs submitted while the simulators inject latency, 429s,
500s and accept-then-timeout, while random instances and the broker are killed with SIGKILL and
restarted. Then, from ground truth: no run stuck, no key delivered twice, every committed effect
exactly once in the ledger, every run's log a valid lifecycle, rebuilt projections equal live ones.

`make test` runs a small variant; `make chaos` the full one (KEEL_CHAOS_RUNS, KEEL_CHAOS_SECONDS).
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Producer
from harness import rebuilt_projection_differences
from helpers import unique, wait_for
from monkey import INSTANCES, SCALING, Monkey
from verify import verify

from keel.contracts import RunRequested
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.stack import stop_background
from keel.topics import RUN_REQUESTS
from keel.workflows import Catalog

pytestmark = pytest.mark.chaos
RUNS = int(os.environ.get("KEEL_CHAOS_RUNS", "40"))
SECONDS = float(os.environ.get("KEEL_CHAOS_SECONDS", "25"))
KILL_EVERY = float(os.environ.get("KEEL_CHAOS_KILL_EVERY", "3"))
SEED = int(os.environ.get("KEEL_CHAOS_SEED", str(int(time.time()))))
# The target is 5 s (make chaos asserts it). The small variant in make test asserts a looser bound: it
# still catches a regression to session-timeout recovery without turning CI red on a slow start-up.
RECOVERY_LIMIT_S = float(os.environ.get("KEEL_CHAOS_RECOVERY_LIMIT_S", "15"))

FAULTS = {
    "email": [
        {"kind": "latency", "ms": 300, "times": 10, "after": 2},
        {"kind": "rate_limit", "retry_after": 1, "times": 6, "after": 5},
        {"kind": "error", "status": 500, "times": 6, "after": 12},
        {"kind": "accept_then_timeout", "ms": 2500, "times": 6, "after": 20},
    ],
    "crm": [
        {"kind": "latency", "ms": 300, "times": 10, "after": 3},
        {"kind": "error", "status": 503, "times": 6, "after": 8},
        {"kind": "accept_then_timeout", "ms": 2500, "times": 6, "after": 15},
        {"kind": "rate_limit", "retry_after": 1, "times": 6, "after": 25},
    ],
    "model": [
        {"kind": "latency", "ms": 200, "times": 10, "after": 4},
        {"kind": "rate_limit", "retry_after": 1, "times": 4, "after": 10},
        {"kind": "error", "status": 500, "times": 4, "after": 20},
    ],
}


def _request(i: int) -> RunRequested:
    if i % 3 == 2:
        workflow, data = (
            "chaos_fanout",
            {"lead_email": f"lead{i}@acme.test", "lead_name": f"Lead {i}", "company": f"Company {i}"},
        )
    else:
        workflow, data = (
            "chaos_email",
            {"lead_email": f"lead{i}@acme.test", "lead_name": f"Lead {i}", "product": "Keel"},
        )
    return RunRequested(
        request_id=unique("req"),
        run_id=unique(f"chaos-{i}"),
        tenant_id="acme",
        workflow=workflow,
        input_json=json.dumps(data),
        requested_at=datetime.now(UTC),
    )


def _submit(settings: Settings, accepted: list[str], done: threading.Event) -> None:
    """RUNS requests spread over SECONDS; a run counts as accepted once the broker acknowledged it."""
    serde = Serde(registry_client(settings.schema_registry_url))
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "message.timeout.ms": 120_000,
        }
    )
    for i in range(RUNS):
        req = _request(i)
        producer.produce(
            RUN_REQUESTS,
            key=req.run_id,
            value=serde.encode(RUN_REQUESTS, req),
            on_delivery=lambda err, msg, rid=req.run_id: err is None and accepted.append(rid),
        )
        producer.poll(0)
        time.sleep(SECONDS / RUNS)
    producer.flush(120)
    done.set()


def test_exactly_once_effects_under_kill_9(stack, keel, sims):
    events, _ = keel
    for name, rules in FAULTS.items():
        sims.fault(name, **rules[0])
        for rule in rules[1:]:
            sims.fault(name, **rule)
    monkey = Monkey(stack, SEED)
    monkey.start_all()
    accepted: list[str] = []
    submitted = threading.Event()
    t0 = time.monotonic()
    threading.Thread(target=_submit, args=(stack, accepted, submitted), daemon=True).start()
    threading.Thread(target=monkey.supervise, daemon=True).start()
    broker_at = t0 + SECONDS * 0.4
    try:
        while not submitted.is_set() or time.monotonic() - t0 < SECONDS:
            time.sleep(monkey.rng.uniform(0.5, 1.5) * KILL_EVERY)
            if monkey.figures.broker_kills == 0 and time.monotonic() > broker_at:
                monkey.kill_broker()
            else:
                monkey.kill_one()
        chaos_end = time.monotonic()
        ended = ("completed", "failed", "canceled", "quarantined")

        def open_runs() -> list[str]:
            return [r for r in accepted if not any(k in ended for k in events.kinds(r))]

        try:
            wait_for(lambda: not open_runs(), 180, "every accepted run to end")
        except AssertionError:
            for run_id in open_runs()[:5]:  # what the stuck ones were waiting for
                print(run_id, [(e.event, e.step, e.attempt, e.source) for e in events.of(run_id)][-6:])
            raise
        drained = time.monotonic() - chaos_end
    finally:
        monkey.stop()

    stats = {name: sims.stats(name) for name in ("email", "crm")}
    deliveries = {k: n for s in stats.values() for k, n in s["by_key"].items()}
    catalog = Catalog.configured()
    side_effects = {w: {s.name for s in catalog.get(w).steps if s.side_effects} for w in catalog.names()}
    verdict = verify(stack, accepted, deliveries, side_effects)

    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        projection_diff, _ = rebuilt_projection_differences(stack, conn)

    recovery = monkey.figures.recovery_while_broker_up()
    near_broker = [
        (n, round(r, 2)) for n, at, r in monkey.figures.recoveries if monkey.figures.during_broker_outage(at)
    ]
    faults = {n: sims.stats(n)["faults_fired"] for n in ("email", "crm", "model")}
    print(f"\n--- chaos (seed {SEED}) ---")
    print(f"runs accepted {len(accepted)} of {RUNS}: {dict(verdict.by_status)}")
    print(
        f"kills {len(monkey.figures.kills)} ({', '.join(monkey.figures.kills)}), broker kills "
        f"{monkey.figures.broker_kills}, crashes restarted {len(monkey.figures.crashes_restarted)}"
    )
    print(f"faults fired {faults}")
    print(
        f"deliveries: email {stats['email']['deliveries']}, crm {stats['crm']['deliveries']}; "
        f"duplicates = {len(verdict.duplicate_deliveries)}; "
        f"ledger duplicates = {len(verdict.ledger_duplicates)}"
    )
    print(f"time to drain after the last kill: {drained:.1f}s")
    every = [r for _, _, r in monkey.figures.recoveries]
    print(
        "recovery after kill -9 while the broker was up (s, worst per service): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(recovery.items()))
        + (f"; median of all {statistics.median(every):.2f}" if every else "")
    )
    print(f"kills during the broker's outage (rejoin waits for the broker): {near_broker}")

    assert len(accepted) == RUNS
    assert verdict.stuck == []
    assert verdict.duplicate_deliveries == {}
    assert verdict.ledger_duplicates == {}
    assert verdict.committed_without_ledger == [] and verdict.ledger_id_mismatch == []
    assert verdict.lifecycle == {}
    assert projection_diff == {}
    assert monkey.figures.broker_kills == 1 and len(monkey.figures.kills) >= 3
    assert all(v < RECOVERY_LIMIT_S for v in recovery.values()), (
        f"recovery over {RECOVERY_LIMIT_S} s: {recovery}"
    )


@pytest.fixture(autouse=True)
def _second_instances_stop(stack: Settings):
    yield
    for service in SCALING:
        for instance in INSTANCES[1:]:
            stop_background(stack, f"{service}-{instance}")
