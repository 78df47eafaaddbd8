"""An index of the dead-letter topics that reads only what is new on each call.

Operators' calls used to re-read both topics from the beginning each time (over a second even when
empty). The index keeps one read_committed consumer on every partition of both topics and, per call,
reads up to the end each partition has *now* (its last stable offset), so an answer still reflects
every dead letter and redrive committed before the call. The caller's own redrive is recorded here as it
commits (`redriven`): a transaction's commit returns before the broker has written its markers to the
topic, so the last stable offset may not cover it yet on the very next call.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from keel import dlq
from keel.contracts import DeadLetter
from keel.producer import client_config
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import DEAD_LETTER_STATUS, DEAD_LETTERS


class IndexUnavailable(Exception):
    """The topics could not be read to their end in time."""


class DeadLetterIndex:
    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._serde = Serde(registry_client(settings.schema_registry_url))
        self._letters: dict[str, DeadLetter] = {}  # in the order read: oldest first per partition
        self._status: dict[str, dict[str, Any] | None] = {}

    def entries(self) -> list[dlq.Entry]:
        """Every dead letter with its redrive status, as of this call."""
        with self._lock:
            try:
                self._catch_up()
            except Exception as exc:
                # Whatever was consumed but not applied would be lost: start over on the next call.
                self._reset()
                raise IndexUnavailable(f"the dead-letter topics cannot be read: {exc}") from exc
            return [dlq.Entry(x, self._status.get(i)) for i, x in self._letters.items()]

    def redriven(self, dead_letter_id: str, status: dict[str, Any]) -> None:
        """A redrive this process committed: its next call sees it, whether or not the topic shows it yet
        (the same status is read from the topic later, changing nothing)."""
        with self._lock:
            self._status[dead_letter_id] = status

    def _catch_up(self) -> None:
        consumer = self._ensure_consumer()
        # For a read_committed consumer the high mark is the last stable offset: what is committed now.
        # (Partitions stay paused between calls: a pending fetch would hold these queries up.)
        ends = {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
            for tp in self._parts()
        }
        behind = {tp: high for tp, (low, high) in ends.items() if high > low}
        behind = self._still_behind(consumer, behind)
        if not behind:
            return
        resumed = consumer.position([TopicPartition(t, p) for t, p in behind])
        consumer.resume(resumed)
        for tp in resumed:  # a seek starts the fetch at once (a resume alone waits for a fetch cycle)
            consumer.seek(
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            )
        try:
            deadline = time.monotonic() + self.timeout_s
            while behind:
                if time.monotonic() > deadline:
                    raise IndexUnavailable(f"dead letters not read to their end within {self.timeout_s:.0f}s")
                for msg in consumer.consume(500, 0.05):
                    if msg.error() is None:
                        self._apply(msg.topic(), msg.key(), msg.value())
                behind = self._still_behind(consumer, behind)
        finally:
            consumer.pause(resumed)

    @staticmethod
    def _still_behind(consumer: Consumer, ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Those of `ends` whose position has not reached the end (control records count as read)."""
        positions = consumer.position([TopicPartition(t, p) for t, p in ends])
        return {
            (tp.topic, tp.partition): ends[(tp.topic, tp.partition)]
            for tp in positions
            if tp.offset < ends[(tp.topic, tp.partition)]
        }

    def _apply(self, topic: str | None, key: bytes | None, value: bytes | None) -> None:
        if topic == DEAD_LETTER_STATUS:
            self._status[(key or b"").decode()] = json.loads(value) if value else None
        elif value is not None:  # a tombstone on the dead letters would only be someone's cleanup
            letter = self._serde.decode(DEAD_LETTERS, value)
            self._letters[letter.dead_letter_id] = letter

    def _parts(self) -> list[TopicPartition]:
        assert self._consumer is not None
        parts = []
        for topic in (DEAD_LETTERS, DEAD_LETTER_STATUS):
            meta = self._consumer.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
            if meta is not None and meta.error is None:
                parts += [TopicPartition(topic, p) for p in meta.partitions]
        new = [
            TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
            for tp in parts
            if (tp.topic, tp.partition) not in self._assigned
        ]
        if new:  # partitions added since the last call start from their beginning, paused
            self._consumer.incremental_assign(new)
            self._consumer.pause(new)
            self._assigned |= {(tp.topic, tp.partition) for tp in new}
        return parts

    def _ensure_consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **client_config(self.settings),
                    "group.id": f"keel-api-dlq-{uuid.uuid4().hex[:10]}",  # never commits: no group state
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        return self._consumer

    def _reset(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._consumer, self._assigned = None, set()
        self._letters, self._status = {}, {}

    def close(self) -> None:
        with self._lock:
            self._reset()
