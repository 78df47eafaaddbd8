"""Transactional producer calls with deadlines of our own, and where a consumer stands."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

log = logging.getLogger(__name__)


class StuckTransaction(RuntimeError):
    """A transactional call blocked past its deadline: the producer is abandoned and replaced."""


def send_offsets(
    producer: Producer, consumer: Consumer, offsets: list[TopicPartition], timeout: float
) -> None:
    """send_offsets_to_transaction with a deadline of our own: librdkafka's can block far past its
    timeout when the group coordinator went away (librdkafka #5456, #5511)."""
    metadata = consumer.consumer_group_metadata()
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            producer.send_offsets_to_transaction(offsets, metadata, timeout)
            outcome.append(None)
        except BaseException as exc:  # handed to the loop's thread below
            outcome.append(exc)

    worker = threading.Thread(target=call, name="send-offsets", daemon=True)
    worker.start()
    worker.join(timeout + 5)
    if not outcome:
        raise StuckTransaction(f"send_offsets_to_transaction still blocked after {timeout + 5:.0f}s")
    if outcome[0] is not None:
        raise outcome[0]


def commit(producer: Producer, timeout: float) -> None:
    for _ in range(5):
        try:
            producer.commit_transaction(timeout)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            log.warning("commit_transaction retriable error, retrying: %s", exc)
    producer.commit_transaction(timeout)


def positions(consumer: Consumer) -> list[TopicPartition]:
    """Where the consumer stands on every assigned partition (its committed offset where it has not
    fetched yet). A timer-only transaction sends these, so that it carries the group's metadata too:
    a member that has been fenced out of the group (a zombie) cannot commit state built from stale data.
    """
    assigned = consumer.assignment()
    if not assigned:
        return []
    current = consumer.position(assigned)
    known = [tp for tp in current if tp.offset >= 0]
    unknown = [TopicPartition(tp.topic, tp.partition) for tp in current if tp.offset < 0]
    if unknown:
        known += [tp for tp in consumer.committed(unknown, timeout=10) if tp.offset >= 0]
    return [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in known]
