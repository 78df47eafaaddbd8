"""Test helpers: unique names, reading topics to a count or a deadline (never a bare sleep)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from keel.settings import Settings
from keel.topics import TopicSpec, ensure_topics


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_topics(settings: Settings, *names: str, partitions: int = 1) -> None:
    ensure_topics(
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}),
        [TopicSpec(n, partitions) for n in names],
    )


def read_topic(
    settings: Settings,
    topic: str,
    *,
    isolation: str = "read_committed",
    expect: int | None = None,
    timeout: float = 15.0,
    idle: float = 1.0,
) -> list[Message]:
    """Every message of `topic` from the beginning. Stops at `expect` messages, else once the reader
    has reached the high watermark of every partition (or `idle` seconds passed with nothing new after
    the deadline for `expect`)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": unique("reader"),
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
    consumer.assign(parts)
    out: list[Message] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    if expect is None and len(at_end) == len(parts):
                        break
                continue
            at_end.discard(msg.partition() or 0)
            out.append(msg)
            if expect is not None and len(out) >= expect:
                break
    finally:
        consumer.close()
    return out


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
