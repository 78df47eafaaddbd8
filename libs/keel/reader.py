"""Read a topic from its beginning to its end (or to a count): for operators' tools and tests."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from keel.producer import client_config
from keel.settings import Settings


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
            **client_config(settings),
            "group.id": f"keel-reader-{uuid.uuid4().hex[:10]}",
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
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
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
