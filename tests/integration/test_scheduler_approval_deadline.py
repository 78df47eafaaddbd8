"""An approval's deadline is a durable timer: a scheduler restored from the real changelog (after its
predecessor died) fires it once, on time, and the step's on_timeout rule applies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import unique, wait_for
from scheduler_kit import catalog, run_id_on
from scheduler_topics import scheduler_topics
from test_scheduler_retention import assign, write_changelog

from keel import events as ev
from keel.contracts import RunEvent, RunRequested, StepCommand
from keel.txloop import Output, Record
from keel.workflows import load_workflow
from services.scheduler.config import SchedulerSettings, SchedulerTopics
from services.scheduler.service import SchedulerProcessor
from services.scheduler.state import RunState

pytestmark = pytest.mark.integration

APPROVE_REFUND = load_workflow(Path(__file__).parents[1] / "workflows" / "approve_refund.v1.yaml")


def processor(stack, topics: SchedulerTopics) -> SchedulerProcessor:
    return SchedulerProcessor(
        stack,
        catalog(APPROVE_REFUND),
        {"refund@1": "provider_key"}.get,
        topics=topics,
        config=SchedulerSettings(budgets=False),  # no enforcer here
        group=unique("test-scheduler"),
    )


def facts(outputs: list[Output]) -> list[RunEvent]:
    return [o.value for o in outputs if isinstance(o.value, RunEvent)]


def test_an_approval_deadline_survives_a_restart_and_fires_once(stack):
    topics = scheduler_topics(stack)
    run_id = run_id_on(0, stack.topic_partitions)
    request = RunRequested(
        request_id=f"req-{run_id}",
        run_id=run_id,
        tenant_id="acme",
        workflow=APPROVE_REFUND.name,
        input_json=json.dumps({"charge_id": "ch_1", "amount_cents": 500}),
        requested_at=datetime.now(UTC),
    )
    first = processor(stack, topics)
    outputs = list(first.handle(Record(topics.requests, 0, 0, run_id, request, 0)))
    first.on_commit()
    [asked] = [f for f in facts(outputs) if f.event == ev.APPROVAL_REQUESTED]
    deadline = json.loads(asked.output_json or "{}")["deadline"]
    assert json.loads(asked.output_json or "{}")["on_timeout"] == "deny"
    assert not any(isinstance(o.value, StepCommand) for o in outputs)  # nothing is sent before a yes
    # The scheduler dies here: all that is left of the run is what it wrote to its changelog.
    write_changelog(stack, topics.state, [o for o in outputs if o.topic == topics.state])
    del first

    restored = processor(stack, topics)
    assign(restored, topics, list(range(stack.topic_partitions)))
    state = restored.states.get(run_id)
    assert state is not None and state.steps["refund"].status == "awaiting_approval"
    assert restored.timers[run_id] == deadline
    assert facts(list(restored.tick(deadline - 1))) == []

    fired: list[RunEvent] = []

    def expired() -> bool:
        fired.extend(facts(list(restored.tick(deadline))))
        return any(f.event == ev.FAILED for f in fired)

    wait_for(expired, 30, "the approval's deadline to fire once the partition caught up")
    assert [f.event for f in fired] == [ev.QUARANTINE_RESOLVED, ev.FAILED]
    resolved, failed = fired
    assert resolved.quarantine is not None and resolved.quarantine.decision == "expire"
    assert resolved.quarantine.decided_by == "scheduler" and resolved.idempotency_key == asked.idempotency_key
    assert failed.run is not None and "expired" in (failed.run.reason or "")
    # once: the timer is gone, and a later tick finds nothing to fire
    restored.on_commit()
    assert run_id not in restored.timers and facts(list(restored.tick(deadline + 60_000))) == []
    ended = restored.states.get(run_id)
    assert isinstance(ended, RunState) and ended.status == "failed"
