"""The transactional loop against the real broker: crash before commit, aborts, poison messages, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from echo import envelopes, make_loop
from helpers import make_topics, read_topic, unique, wait_for

from keel.contracts import DeadLetter, RunEvent, RunRequested
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings

pytestmark = pytest.mark.integration
ECHO = Path(__file__).with_name("echo.py")


@pytest.fixture
def topics(stack: Settings) -> Iterator[tuple[str, str, str, str, str]]:
    """Fresh input/output/dead-letter topics with their schemas registered; plus a group and txn id."""
    in_t, out_t, dlq = unique("test.in"), unique("test.out"), unique("test.dlq")
    make_topics(stack, in_t, dlq)
    make_topics(stack, out_t, partitions=2)
    register_contracts(registry_client(stack.schema_registry_url), envelopes(in_t, out_t, dlq))
    yield in_t, out_t, dlq, unique("group"), unique("txid")


def serde_for(settings: Settings, in_t: str, out_t: str, dlq: str) -> Serde:
    return Serde(registry_client(settings.schema_registry_url), envelopes(in_t, out_t, dlq))


def request(run_id: str, workflow: str = "outbound_email") -> RunRequested:
    return RunRequested(
        request_id=f"req-{run_id}",
        run_id=run_id,
        tenant_id="acme",
        workflow=workflow,
        requested_at=datetime.now(UTC),
    )


def produce_requests(
    settings: Settings, serde: Serde, topic: str, run_ids: list[str], raw: list[bytes] | None = None
) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for run_id in run_ids:
        producer.produce(topic, key=run_id, value=serde.encode(topic, request(run_id)))
    for blob in raw or []:
        producer.produce(topic, key=b"poison", value=blob)
    assert producer.flush(10) == 0


def committed_offset(settings: Settings, group: str, topic: str) -> int:
    # read_committed consumers fetch offsets with require_stable and wait out any transaction that holds
    # pending offsets; the question here is what is committed now.
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def run_ids_of(settings: Settings, serde: Serde, topic: str, msgs: list) -> list[str]:
    return sorted(serde.decode(topic, m.value()).run_id for m in msgs)


def start_echo(settings: Settings, args: tuple[str, ...], *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ECHO), *args, *extra],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "STARTED"
    return proc


def test_killed_between_produce_and_commit_leaves_nothing_and_reprocesses_exactly_once(stack, topics):
    in_t, out_t, dlq, group, txid = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    run_ids = [unique("run") for _ in range(5)]
    produce_requests(stack, serde, in_t, run_ids)

    worker = start_echo(stack, topics[:3] + (group, txid), "--hang-before-commit")
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "HANGING-BEFORE-COMMIT"
    # The outputs really are on the log (ground truth: an uncommitted reader sees them) ...
    assert len(read_topic(stack, out_t, isolation="read_uncommitted", expect=5)) == 5
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    # ... and nothing is visible to read_committed readers, nor are the input offsets committed.
    assert read_topic(stack, out_t) == []
    assert committed_offset(stack, group, in_t) < 0

    restarted = start_echo(stack, topics[:3] + (group, txid))
    try:
        wait_for(lambda: committed_offset(stack, group, in_t) == 5, what="the restarted worker to commit")
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(20)
    visible = read_topic(stack, out_t)
    assert run_ids_of(stack, serde, out_t, visible) == sorted(run_ids)  # each input exactly once
    assert (
        len(read_topic(stack, out_t, isolation="read_uncommitted", expect=10)) == 10
    )  # aborted copies stay hidden


def test_aborted_transactions_are_invisible_to_read_committed_readers(stack, topics):
    _, out_t, _, _, txid = topics
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "transactional.id": txid})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(out_t, key=f"aborted-{i}", value=b"x")
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(2):
        producer.produce(out_t, key=f"committed-{i}", value=b"y")
    producer.commit_transaction(30)

    committed = read_topic(stack, out_t)
    assert sorted(m.key() for m in committed) == [b"committed-0", b"committed-1"]
    assert len(read_topic(stack, out_t, isolation="read_uncommitted", expect=5)) == 5


def test_loop_aborts_and_rewinds_when_the_commit_fails(stack, topics):
    in_t, out_t, dlq, group, txid = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    run_ids = [unique("run") for _ in range(4)]
    produce_requests(stack, serde, in_t, run_ids)
    failures = [
        KafkaException(KafkaError(KafkaError._STATE, "injected commit failure", txn_requires_abort=True))
    ]

    def fail_once() -> None:
        if failures:
            # Make sure the batch's copies reached the log before the abort (else they are purged).
            loop.producer.flush(10)
            raise failures.pop()

    loop = make_loop(stack, in_t, out_t, dlq, group, txid, before_commit=fail_once)
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: committed_offset(stack, group, in_t) == 4, what="the loop to commit after the abort")
    finally:
        loop.stop()
        runner.join(20)
    assert loop.aborted_batches == 1
    assert run_ids_of(stack, serde, out_t, read_topic(stack, out_t)) == sorted(run_ids)
    # The aborted batch's copies are on the log (one batch holds 1 to 4 of the inputs), but hidden.
    assert 5 <= len(read_topic(stack, out_t, isolation="read_uncommitted")) <= 8


def test_poison_messages_go_to_dead_letters_and_the_loop_keeps_going(stack, topics):
    in_t, out_t, dlq, group, txid = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    good = [unique("run") for _ in range(3)]
    poison = [b"\x00\x00\x00\x00\x07garbage-after-a-fake-header", b"plain text, not Avro at all"]
    produce_requests(stack, serde, in_t, good[:1], raw=poison)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    producer.produce(
        in_t, key="rejected", value=serde.encode(in_t, request("rejected", workflow="reject-me"))
    )
    producer.flush(10)
    produce_requests(stack, serde, in_t, good[1:])

    loop = make_loop(stack, in_t, out_t, dlq, group, txid)
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: committed_offset(stack, group, in_t) == 6, what="all six messages to be consumed")
    finally:
        loop.stop()
        runner.join(20)

    assert run_ids_of(stack, serde, out_t, read_topic(stack, out_t)) == sorted(good)
    letters = [serde.decode(dlq, m.value()) for m in read_topic(stack, dlq, expect=3)]
    assert all(isinstance(x, DeadLetter) for x in letters)
    by_offset = {x.source_offset: x for x in letters}
    assert sorted(by_offset) == [1, 2, 3]
    assert [by_offset[1].value, by_offset[2].value] == poison  # original bytes kept
    assert {by_offset[1].error_class, by_offset[2].error_class} == {"undecodable"}
    assert by_offset[3].error_class == "unknown_workflow" and "reject-me" in by_offset[3].reason
    for x in letters:
        assert (x.source_topic, x.source_partition, x.consumer_group) == (in_t, 0, group)
        assert x.dead_letter_id == f"{in_t}:0:{x.source_offset}"


def test_sigterm_finishes_the_batch_and_exits_cleanly(stack, topics):
    in_t, out_t, dlq, group, txid = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    produce_requests(stack, serde, in_t, [unique("run") for _ in range(3)])
    worker = start_echo(stack, topics[:3] + (group, txid))
    wait_for(lambda: committed_offset(stack, group, in_t) == 3, what="the worker to commit")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0
    assert "STOPPED committed_batches=" in out
    assert len(read_topic(stack, out_t)) == 3
    assert isinstance(serde.decode(out_t, read_topic(stack, out_t, expect=1)[0].value()), RunEvent)
