"""The notifier's shell against the real broker and the receiver simulator: the group's committed offset
waits for the oldest unsettled notification (later events and other tenants pass it), and a give-up is
a dead letter before the offset moves on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import make_topics, read_topic, unique, wait_for

from infra.simulators.runner import running
from keel.contracts import RunDetail, RunEvent
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from services.notifier.config import NotifierSettings
from services.notifier.service import Notifier

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    settings: NotifierSettings
    topic: str
    dead_letters: str
    group: str
    serde: Serde
    receiver: str

    def produce(self, events: list[RunEvent]) -> None:
        producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap, "enable.idempotence": True})
        for e in events:
            producer.produce(self.topic, key=e.run_id, value=self.serde.encode(self.topic, e), partition=0)
        assert producer.flush(10) == 0

    def committed(self) -> int:
        probe = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": self.group})
        try:
            [tp] = probe.committed([TopicPartition(self.topic, 0)], timeout=10)
            return tp.offset
        finally:
            probe.close()

    def deliveries(self, event_id: str) -> list[dict]:
        url = f"{self.receiver}/_deliveries"
        return httpx.get(url, params={"event_id": event_id}).json()["deliveries"]

    def succeeded(self, event_id: str) -> bool:
        return any(d["status"] == 200 for d in self.deliveries(event_id))


def event(tenant: str, kind: str = "completed") -> RunEvent:
    run_id = unique("run")
    return RunEvent(
        event_id=f"{run_id}:0:{kind}",
        run_id=run_id,
        tenant_id=tenant,
        workflow="wf",
        event=kind,
        ts=datetime.now(UTC),
        source="scheduler",
        run=RunDetail(status=kind) if kind == "completed" else None,
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    with running("receiver") as url:
        yield url


@pytest.fixture
def setup(stack: Settings, receiver: str) -> Setup:
    topic, dead = unique("test.run-events"), unique("test.dead-letters")
    make_topics(stack, topic, dead)
    client = registry_client(stack.schema_registry_url)
    register_contracts(client, {topic: "run_event", dead: "dead_letter"})
    hooks = {
        "t-a": {"url": f"{receiver}/hook/a", "secret": "sa"},
        "t-b": {"url": f"{receiver}/hook/b", "secret": "sb"},
        "t-refuses": {"url": f"{receiver}/nohook", "secret": "sc"},  # 404: refused, never retried
    }
    settings = NotifierSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        schema_registry_url=stack.schema_registry_url,
        data_dir=stack.data_dir,
        webhooks=json.dumps(hooks),
        webhook_backoff_s=0.05,
        webhook_backoff_max_s=0.2,
        webhook_timeout_s=1.0,
        webhook_max_attempts=1000,
        notifier_start="earliest",
        notifier_commit_interval_s=0.1,
        poll_timeout_s=0.05,
    )
    serde = Serde(client, {topic: "run_event", dead: "dead_letter"})
    return Setup(settings, topic, dead, unique("notifier"), serde, receiver)


@pytest.fixture
def notifier(setup: Setup) -> Iterator[Notifier]:
    running_one = Notifier(
        setup.settings, topic=setup.topic, dead_letters=setup.dead_letters, group_id=setup.group
    )
    thread = threading.Thread(target=running_one.run, daemon=True)
    thread.start()
    yield running_one
    running_one.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_the_committed_offset_waits_for_the_oldest_unsettled_notification(setup: Setup, notifier: Notifier):
    httpx.post(
        f"{setup.receiver}/_faults", json={"kind": "error", "status": 503, "times": 10_000, "path": "/hook/a"}
    )
    try:
        stuck, other = event("t-a"), event("t-b")
        quiet = [event("t-a", "step_started") for _ in range(3)]
        setup.produce([stuck, *quiet, other])  # offsets 0, 1-3, 4
        wait_for(lambda: setup.succeeded(other.event_id), 20, "the other tenant's delivery")
        wait_for(lambda: len(setup.deliveries(stuck.event_id)) >= 3, 20, "retries of the stuck one")
        # Read and settled: everything after offset 0. Committed: 0, where a restart must resend from.
        wait_for(lambda: setup.committed() == 0, 10, "the start to be committed")
        assert not setup.succeeded(stuck.event_id)
        wait_for(lambda: len(setup.deliveries(stuck.event_id)) >= 5, 20, "more retries")
        assert setup.committed() == 0
    finally:
        httpx.delete(f"{setup.receiver}/_faults")
    wait_for(lambda: setup.succeeded(stuck.event_id), 20, "the stuck one's delivery")
    wait_for(lambda: setup.committed() == 5, 10, "the offset to move past everything")


def test_a_refused_notification_is_a_dead_letter_before_the_offset_moves(setup: Setup, notifier: Notifier):
    refused = event("t-refuses")
    setup.produce([refused])
    [msg] = read_topic(setup.settings, setup.dead_letters, expect=1, timeout=20)
    letter = setup.serde.decode(setup.dead_letters, msg.value())
    assert letter.error_class == "webhook_undeliverable" and letter.consumer_group == setup.group
    assert (
        refused.event_id in letter.reason and "HTTP 404" in letter.reason and "not retried" in letter.reason
    )
    assert (letter.source_topic, letter.source_offset) == (setup.topic, 0)
    assert setup.serde.decode(setup.topic, letter.value).event_id == refused.event_id
    wait_for(lambda: setup.committed() == 1, 10, "the offset to move on")


def test_an_event_waiting_for_the_schema_registry_is_read_again_not_skipped(setup: Setup, caplog):
    blind = setup.settings.model_copy(update={"schema_registry_url": "http://127.0.0.1:1"})
    notifier = Notifier(blind, topic=setup.topic, dead_letters=setup.dead_letters, group_id=setup.group)
    thread = threading.Thread(target=notifier.run, daemon=True)
    thread.start()
    try:
        later = event("t-b")
        setup.produce([later])
        # The notifier has tried to read it (and, skipping it, would say "cannot read").
        seen = ("schema registry unavailable", "cannot read")
        wait_for(lambda: any(s in caplog.text for s in seen), 20, "the registry to be missed")
        assert not setup.deliveries(later.event_id)
        notifier.serde = Serde(registry_client(setup.settings.schema_registry_url), setup.serde.envelopes)
        wait_for(lambda: setup.succeeded(later.event_id), 20, "the delivery once the registry answers")
        wait_for(lambda: setup.committed() == 1, 10, "the offset to move on")
    finally:
        notifier.stop()
        thread.join(30)


def test_a_backlog_pauses_reading_and_nothing_is_lost_when_it_resumes(setup: Setup):
    small = setup.settings.model_copy(update={"notifier_max_pending": 2})
    notifier = Notifier(small, topic=setup.topic, dead_letters=setup.dead_letters, group_id=setup.group)
    thread = threading.Thread(target=notifier.run, daemon=True)
    httpx.post(
        f"{setup.receiver}/_faults", json={"kind": "error", "status": 503, "times": 10_000, "path": "/hook/a"}
    )
    thread.start()
    try:
        backlog = [event("t-a") for _ in range(3)]
        setup.produce(backlog)
        wait_for(lambda: notifier.paused, 20, "reading to pause on the backlog")
        later = event("t-b")
        setup.produce([later])
        wait_for(lambda: setup.committed() == 0, 10, "the start committed, and no further")
        httpx.delete(f"{setup.receiver}/_faults")
        for e in [*backlog, later]:
            wait_for(lambda e=e: setup.succeeded(e.event_id), 20, f"the delivery of {e.event_id}")
        wait_for(lambda: not notifier.paused, 10, "reading to resume")
        wait_for(lambda: setup.committed() == 4, 10, "the offset to move past everything")
    finally:
        httpx.delete(f"{setup.receiver}/_faults")
        notifier.stop()
        thread.join(30)
