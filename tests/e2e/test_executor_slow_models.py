"""Slow models never stall the executor's loop, and no model call is made twice for one attempt."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from helpers import unique, wait_for

from keel.contracts import StepCommand
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import STEP_COMMANDS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
BACKLOG = 24  # with 20 s per call, far more than a loop that waits on its calls can take within its watchdog


def llm_command(run_id: str, deadline: datetime) -> StepCommand:
    payload = {"model": "sim-small", "prompt": f"Write to {run_id}.", "response_format": "text"}
    return StepCommand(
        command_id=f"{run_id}/draft/1",
        run_id=run_id,
        tenant_id="acme",
        workflow="outbound_email",
        workflow_version=1,
        step="draft",
        kind="llm",
        attempt=1,
        input_json=json.dumps(payload),
        issued_at=datetime.now(UTC),
        deadline=deadline,
    )


def publish(settings: Settings, commands: list[StepCommand]) -> None:
    """Step commands straight onto the topic, as a scheduler with a backlog would have issued them."""
    serde = Serde(registry_client(settings.schema_registry_url))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    for cmd in commands:
        producer.produce(STEP_COMMANDS, key=cmd.run_id, value=serde.encode(STEP_COMMANDS, cmd))
    assert producer.flush(10) == 0


def model_calls_of_other_runs(events, runs: list[str], since: datetime) -> int:
    mine = set(runs)
    return sum(
        1
        for run in list(events.by_run)
        if run not in mine
        for e in events.of(run)
        if e.ts >= since
        and (e.event == "model_called" or (e.event == "step_failed" and "not called" not in (e.error or "")))
    )


def test_a_backlog_of_slow_model_calls_keeps_the_loop_committing_and_calls_each_model_once(
    stack, sims, events
):
    sims.fault("model", kind="latency", ms=20_000, times=BACKLOG)
    runs, started = [unique("slow") for _ in range(BACKLOG)], datetime.now(UTC)
    deadline = datetime.now(UTC) + timedelta(seconds=150)
    publish(stack, [llm_command(r, deadline) for r in runs])

    # Each call is recorded as started in a short transaction of its own, before the call is made.
    wait_for(
        lambda: all("step_started" in events.kinds(r) for r in runs),
        8,
        "step_started of the whole backlog while the model calls are still running",
    )
    assert not any("model_called" in events.kinds(r) for r in runs)  # the calls are indeed in flight

    # Every answer is committed, each attempt's model asked once, and the loop survived the backlog.
    wait_for(
        lambda: all("step_committed" in events.kinds(r) for r in runs),
        150,
        "every slow call's answer to be committed",
    )
    called = Counter((e.run_id, e.attempt) for r in runs for e in events.of(r) if e.event == "model_called")
    assert called == Counter({(r, 1): 1 for r in runs})
    model = sims.stats("model")
    assert model["faults_fired"] == {"latency": BACKLOG}
    # Ground truth: the provider saw one call per attempt, no more (beside calls of other runs resumed
    # from the shared topics meanwhile, each of which left its own model_called or step_failed).
    assert model["requests"] == BACKLOG + model_calls_of_other_runs(events, runs, started)


def test_a_call_whose_deadline_passed_before_it_could_start_is_not_made(stack, sims, events):
    runs = [unique("late") for _ in range(3)]
    publish(stack, [llm_command(r, datetime.now(UTC) - timedelta(seconds=1)) for r in runs])

    wait_for(
        lambda: all("step_failed" in events.kinds(r) for r in runs),
        20,
        "each lost attempt to be reported",
    )
    for r in runs:
        assert events.kinds(r) == ["step_started", "step_failed"]
        failed = events.of(r)[-1]
        assert failed.step_detail.failure_class == "transient" and "deadline" in failed.error
    assert sims.stats("model")["requests"] == 0  # the scheduler already counts these attempts as lost
