"""The dashboard against the real broker and database: killed mid-stream, its offsets reset so every
counted event is delivered again, restarted, it serves the figures of one uninterrupted pass and of
the events themselves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from dashboard_stream import figures, stream
from helpers import make_topics, unique, wait_for

from keel import db
from keel.contracts import RunEvent
from keel.schemas import TOPIC_ENVELOPES
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS
from services.dashboard import store

pytestmark = pytest.mark.integration
PARTITIONS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dashboard:
    """`python -m services.dashboard` as a process on a topic, group and port of its own."""

    def __init__(self, settings: Settings, topic: str, group: str) -> None:
        self.settings, self.topic, self.group, self.port = settings, topic, group, free_port()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        # Small batches: the kill lands between many batches, not after one big one.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "KEEL_BATCH_MAX_MESSAGES": "5"}
        argv = [sys.executable, "-m", "services.dashboard", "--topic", self.topic, "--group", self.group]
        argv += ["--port", str(self.port)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "STARTED"
        wait_for(self.answers, timeout=20, what="the dashboard's HTTP to answer")

    def answers(self) -> bool:
        try:
            return httpx.get(self.url("/dashboard/deliveries"), timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> Any:
        response = httpx.get(self.url(path), timeout=10)
        response.raise_for_status()
        return response.json()

    def delivered(self) -> int:
        return int(self.get("/dashboard/deliveries")["delivered"])

    def figures(self) -> dict[str, Counter[tuple[object, ...]]]:
        runs = self.get("/dashboard/runs-by-status?minutes=240")["buckets"]
        spend = self.get("/dashboard/spend?hours=6")["buckets"]
        failures = self.get("/dashboard/failure-classes")["counts"]
        return {
            "runs": Counter({(at(b["minute"]), b["status"]): b["runs"] for b in runs}),
            "spend": Counter({(b["tenant_id"], at(b["hour"])): b["cost_micros"] for b in spend}),
            "failures": Counter({(b["failure_class"], b["event"]): b["events"] for b in failures}),
        }

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        assert self.proc.wait(20) is not None


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def events_topic(stack: Settings) -> Iterator[tuple[str, Serde]]:
    topic = unique("test.dashboard-events")
    make_topics(stack, topic, partitions=PARTITIONS)
    client = registry_client(stack.schema_registry_url)
    register_contracts(client, {topic: TOPIC_ENVELOPES[RUN_EVENTS]})
    yield topic, Serde(client, {topic: TOPIC_ENVELOPES[RUN_EVENTS]})
    # The figures of this test's scopes (its groups are named after its topic) leave the shared tables.
    with psycopg.connect(db.database_url(stack, start=False), autocommit=True) as conn:
        for table in ("counted_events", "runs_by_status", "spend", "failure_classes", "deliveries"):
            conn.execute(f"DELETE FROM {store.SCHEMA}.{table} WHERE scope LIKE %s", (f"{topic}.%",))


def produce(
    settings: Settings, topic: str, serde: Serde, events: list[RunEvent], abort: bool = False
) -> None:
    """Committed plainly, or inside a transaction that is then aborted (read_committed never sees it)."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True}
    if abort:
        conf["transactional.id"] = unique("test-dashboard-aborter")
    producer = Producer(conf)
    if abort:
        producer.init_transactions(10)
        producer.begin_transaction()
    for e in events:
        producer.produce(topic, key=e.run_id, value=serde.encode(topic, e))
    assert producer.flush(10) == 0
    if abort:
        producer.abort_transaction(10)


def reset_to_start(settings: Settings, group: str, topic: str) -> None:
    """Move the group back to offset 0 once its killed member has left (the broker refuses while the
    group has members): every event it counted is delivered again."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    start = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, 0) for p in range(PARTITIONS)])

    def reset() -> bool:
        try:
            done = admin.alter_consumer_group_offsets([start])[group].result(10)
        except Exception:  # the killed member's session has not expired yet
            return False
        # A partition the broker refused says so in its own error, not by raising.
        return all(tp.error is None for tp in done.topic_partitions)

    wait_for(reset, timeout=40, what="the killed member to leave the group so its offsets can be reset")


def test_killed_mid_stream_and_replayed_from_the_start_the_figures_equal_one_pass_and_the_events(
    stack: Settings, events_topic: tuple[str, Serde]
) -> None:
    topic, serde = events_topic
    events = stream(unique("dash"), 60, datetime.now(UTC) - timedelta(minutes=100))
    copies = events[::7]  # at-least-once copies already on the topic: same event ids
    produce(stack, topic, serde, events + copies)
    # Facts of a transaction that never committed: they must never count.
    ghosts = stream(unique("ghost"), 5, datetime.now(UTC) - timedelta(minutes=30), seed=11)
    produce(stack, topic, serde, ghosts, abort=True)
    # Values that are not run events: skipped and counted, never fatal.
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    producer.produce(topic, key=b"poison", value=b"not avro at all")
    producer.produce(topic, key=b"poison", value=b"\x00\x00\x00\x00\x02garbage")
    assert producer.flush(10) == 0
    total = len(events) + len(copies) + 2
    truth = figures(events)

    interrupted = Dashboard(stack, topic, f"{topic}.interrupted")
    interrupted.start()
    try:
        wait_for(lambda: interrupted.delivered() > 150, timeout=60, what="the dashboard to be under way")
    finally:
        interrupted.stop(signal.SIGKILL)
    with psycopg.connect(db.database_url(stack, start=False), autocommit=True) as conn:
        before_kill = store.deliveries(conn, interrupted.group)["delivered"]
    assert 0 < before_kill < total, "the kill was meant to land mid-stream"

    reset_to_start(stack, interrupted.group, topic)
    interrupted.start()
    try:
        wait_for(
            lambda: interrupted.delivered() >= before_kill + total,
            timeout=90,
            what="the restart to reach the end",
        )
        after_restart = interrupted.figures()
        redelivered = interrupted.get("/dashboard/deliveries")
    finally:
        interrupted.stop()

    single = Dashboard(stack, topic, f"{topic}.single")
    single.start()
    try:
        wait_for(
            lambda: single.delivered() >= total, timeout=90, what="one uninterrupted pass to reach the end"
        )
        one_pass = single.figures()
        single_deliveries = single.get("/dashboard/deliveries")
        # A window keeps the buckets from its start on; a window of no time is refused.
        recent = single.get("/dashboard/runs-by-status?minutes=30")
        since = at(recent["since"])
        in_window = sum(n for (minute, _), n in truth["runs"].items() if minute >= since)  # type: ignore[operator]
        assert sum(b["runs"] for b in recent["buckets"]) == in_window > 0
        assert httpx.get(single.url("/dashboard/spend?hours=0")).status_code == 422
    finally:
        single.stop()

    for figure, expected in truth.items():
        assert one_pass[figure] == expected, f"{figure}: one pass differs from the events"
        assert after_restart[figure] == expected, f"{figure}: killed, replayed and restarted differs"
    # Every event counted before the kill came again after the reset, and copies were on the topic:
    # all of them were delivered and none was counted twice.
    assert redelivered["duplicates"] >= before_kill - len(copies)
    assert redelivered["undecodable"] >= 2 and single_deliveries["undecodable"] == 2
    assert sum(truth["failures"].values()) > 20 and len(truth["spend"]) >= 3 and truth["runs"]


def committed_to_end(settings: Settings, group: str, topic: str) -> bool:
    """Whether the group's committed offsets have reached the end of every partition."""
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = probe.committed(parts, timeout=10)
        ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        return all(c.offset == end for c, end in zip(committed, ends, strict=True))
    finally:
        probe.close()


def members_assigned(settings: Settings, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(10)
    return sum(1 for m in described.members if m.assignment and m.assignment.topic_partitions)


def test_two_instances_sharing_a_scope_one_killed_the_survivor_ends_with_the_figures_of_the_events(
    stack: Settings, events_topic: tuple[str, Serde]
) -> None:
    topic, serde = events_topic
    events = stream(unique("pair"), 60, datetime.now(UTC) - timedelta(minutes=100), seed=3)
    group = f"{topic}.pair"
    first, second = Dashboard(stack, topic, group), Dashboard(stack, topic, group)
    first.start()
    second.start()
    try:
        wait_for(lambda: members_assigned(stack, group) == 2, timeout=30, what="both to own partitions")
        produce(stack, topic, serde, events[: len(events) // 2])
        wait_for(lambda: first.delivered() > 100, timeout=60, what="the pair to be under way")
        first.stop(signal.SIGKILL)  # its partitions go to the survivor once its session expires
        produce(stack, topic, serde, events[len(events) // 2 :] + events[::9])  # with copies of both halves
        wait_for(
            lambda: committed_to_end(stack, group, topic),
            timeout=90,
            what="the survivor to commit to the end",
        )
        together = second.figures()
    finally:
        for d in (first, second):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
    truth = figures(events)
    for figure, expected in truth.items():
        assert together[figure] == expected, f"{figure}: two instances, one killed, differ from the events"
