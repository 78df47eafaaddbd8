"""The scheduler's shell on topics of its own, against the real broker (for tests/integration)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka.admin import AdminClient
from helpers import unique

from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel.topics import TopicSpec, ensure_topics
from keel.txloop import TransactionalLoop
from services.scheduler.config import SchedulerTopics
from services.scheduler.service import SchedulerProcessor

# A changelog the broker compacts within seconds, not days, so a test can watch compaction happen.
FAST_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "0",
}


def scheduler_topics(settings: Settings, state_config: dict[str, str] | None = None) -> SchedulerTopics:
    topics = SchedulerTopics(
        requests=unique("test.run-requests"),
        events=unique("test.run-events"),
        control=unique("test.control"),
        commands=unique("test.step-commands"),
        state=unique("test.scheduler-state"),
    )
    n = settings.topic_partitions
    specs = [TopicSpec(t, n) for t in (topics.requests, topics.events, topics.control, topics.commands)]
    specs.append(TopicSpec(topics.state, n, state_config or {"cleanup.policy": "compact"}))
    specs.append(TopicSpec(dead_letters(topics), 1))
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    ensure_topics(admin, specs)
    register_contracts(registry_client(settings.schema_registry_url), envelopes(topics))
    return topics


def dead_letters(topics: SchedulerTopics) -> str:
    return topics.state.replace("scheduler-state", "dead-letters")


def envelopes(topics: SchedulerTopics) -> dict[str, str]:
    return {
        topics.requests: "run_request",
        topics.events: "run_event",
        topics.control: "control_command",
        topics.commands: "step_command",
        dead_letters(topics): "dead_letter",
    }


def serde(settings: Settings, topics: SchedulerTopics) -> Serde:
    return Serde(registry_client(settings.schema_registry_url), envelopes(topics))


@contextmanager
def running(
    settings: Settings, topics: SchedulerTopics, processor: SchedulerProcessor
) -> Iterator[TransactionalLoop]:
    """The scheduler's processor in the real transactional loop, on a thread, until the block ends. The
    loop joins the group the processor was made for (its catch-up probe reads that group's offsets)."""
    txid = unique("test-scheduler")
    loop = TransactionalLoop(
        settings,
        serde(settings, topics),
        processor,
        group_id=processor.probe.group,
        topics=topics.inputs(),
        transactional_id=txid,
        instance_id=txid,
        dead_letter_topic=dead_letters(topics),
    )
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        yield loop
    finally:
        loop.stop()
        runner.join(30)
