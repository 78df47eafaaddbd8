"""Asks the broker where a partition's input ends and whether anything is left to read below an offset.

The shell's side of the catch-up gate (services.scheduler.catchup): its own consumer, outside the group,
that never commits; it only reads end offsets, the group's committed offsets and one message or the end
of a partition.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from keel.producer import client_config
from keel.settings import Settings

log = logging.getLogger(__name__)
Where = tuple[str, int]  # (topic, partition)


class EndProbe:
    def __init__(self, settings: Settings, group: str) -> None:
        self.settings, self.group = settings, group
        self._consumer: Consumer | None = None
        self._group_view: Consumer | None = None

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **client_config(self.settings),
                    "group.id": f"keel-end-probe-{uuid.uuid4().hex[:10]}",  # never joins nor commits
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 10,
                }
            )
        return self._consumer

    def partition_counts(self, topics: list[str]) -> dict[str, int]:
        """How many partitions each topic has now (the count Kafka's partitioner divides by)."""
        meta = self._reader().list_topics(timeout=10).topics
        return {t: len(meta[t].partitions) for t in topics if t in meta}

    def end_offsets(self, wheres: list[Where]) -> dict[Where, int]:
        """The end of each partition as a read_committed reader sees it now (its last stable offset)."""
        out: dict[Where, int] = {}
        for topic, p in wheres:
            try:
                _, high = self._reader().get_watermark_offsets(
                    TopicPartition(topic, p), timeout=5, cached=False
                )
                out[(topic, p)] = high
            except KafkaException as exc:  # asked again on the next turn
                log.warning("end offset of %s[%d] unknown for now: %s", topic, p, exc)
        return out

    def resume_offsets(self, wheres: list[Where]) -> dict[Where, int]:
        """Where the group resumes each partition: its committed offset, else the partition's start."""
        if self._group_view is None:
            self._group_view = Consumer(
                {
                    **client_config(self.settings),
                    "group.id": self.group,  # reads the group's offsets; never subscribes nor commits
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                }
            )
        try:
            tps = self._group_view.committed([TopicPartition(t, p) for t, p in wheres], timeout=5)
        except KafkaException as exc:  # e.g. offsets of an open transaction not settled yet
            log.info("committed offsets not known for now: %s", exc)
            return {}
        out: dict[Where, int] = {}
        for tp in tps:
            if tp.offset != OFFSET_INVALID and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
            else:
                low, _ = self._reader().get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=5
                )
                out[(tp.topic, tp.partition)] = low
        return out

    def next_readable(self, starts: dict[Where, int], timeout_s: float = 2.0) -> dict[Where, int]:
        """From each start, the offset of the first record a read_committed reader gets there, or the
        offset of the partition's end when it gets none: either way, nothing readable lies before it.
        Partitions undecided by the timeout are left out."""
        if not starts:
            return {}
        reader = self._reader()
        reader.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        out: dict[Where, int] = {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(out) < len(starts) and time.monotonic() < deadline:
                msg = reader.poll(0.05)
                if msg is None:
                    continue
                where = (msg.topic() or "", msg.partition() or 0)
                if where in out:
                    continue
                err = msg.error()
                if err is None or err.code() == KafkaError._PARTITION_EOF:
                    out[where] = msg.offset() or 0
        finally:
            reader.unassign()
        return out

    def close(self) -> None:
        for consumer in (self._consumer, self._group_view):
            if consumer is not None:
                consumer.close()
        self._consumer = self._group_view = None
