"""Durable registry state: every change is a record on a compacted topic, replayed at start-up."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from keel.producer import client_config
from keel.settings import Settings
from keel.topics import SCHEMAS, TopicSpec, ensure_topics
from services.registry.core import RegistryState, record_key


class KafkaStore:
    """Single writer: one registry instance owns the topic (as with Confluent's leader)."""

    def __init__(self, settings: Settings, topic: str = SCHEMAS) -> None:
        self.settings = settings
        self.topic = topic
        self.state = RegistryState()
        self.lock = threading.Lock()
        ensure_topics(
            AdminClient(client_config(settings)),
            [TopicSpec(topic, 1, {"cleanup.policy": "compact"})],
            settings.topic_replication,
        )
        self.producer = Producer({**client_config(settings), "acks": "all", "enable.idempotence": True})
        self._replay()

    def _replay(self, timeout_s: float = 30.0) -> None:
        consumer = Consumer(
            {
                **client_config(self.settings),
                "group.id": "keel-registry",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        try:
            high = high_watermark(consumer, TopicPartition(self.topic, 0), timeout_s)
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            position, deadline = 0, time.monotonic() + timeout_s
            while position < high:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replaying {self.topic}: at {position} of {high} after {timeout_s}s")
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                position = (msg.offset() or 0) + 1
                if msg.value() is not None:
                    self.state.apply(json.loads(msg.value() or b"{}"))
        finally:
            consumer.close()

    def write(self, record: dict[str, Any]) -> None:
        """Make `record` durable (acks=all), then apply it. Callers hold `lock`."""
        errors: list[Exception] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(RuntimeError(str(err)))

        self.producer.produce(
            self.topic, key=record_key(record), value=json.dumps(record), on_delivery=delivered
        )
        if self.producer.flush(30) != 0:
            raise TimeoutError("schema record not acknowledged by the broker within 30 s")
        if errors:
            raise errors[0]
        self.state.apply(record)


# What a broker answers while a topic it has just created has no leader yet: asking again soon is right.
_NOT_READY = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
)


def high_watermark(consumer: Any, partition: TopicPartition, timeout_s: float) -> int:
    """The partition's high watermark, asked again while the broker says its leader is not ready (a
    topic created a moment ago, a broker just started) until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, high = consumer.get_watermark_offsets(partition, timeout=max(1.0, deadline - time.monotonic()))
            return int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NOT_READY or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
