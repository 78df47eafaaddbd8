"""Partitioned service state kept in a compacted changelog topic, restored from Kafka alone.

A stateful service writes each changed entry to the changelog partition of the input partition it came
from, in the same transaction as its outputs and offsets. On assignment it reads those changelog
partitions back; changes made in a batch become visible to later batches only once the batch commits
(`commit`), and vanish when it aborts (`abort`).

A restore reads up to the high watermark, not only to the last stable offset: while the previous
owner's last transaction is still open (its commit in flight), the end a read_committed reader sees
stops before that batch, yet the input offsets committed with it are where the new owner resumes.
So the restore waits (bounded) until no transaction holds the end back, and reads what it wrote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from keel.producer import client_config
from keel.registryerrors import registry_unavailable
from keel.settings import Settings
from keel.txloop import Output

V = TypeVar("V")
_DELETED = object()  # a staged removal: the key reads as absent until commit, then is gone
log = logging.getLogger(__name__)


class ChangelogState(Generic[V]):
    def __init__(
        self,
        settings: Settings,
        topic: str,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
        group: str,
    ) -> None:
        self.settings, self.topic, self.encode, self.decode = settings, topic, encode, decode
        self.group = group
        self._committed: dict[str, tuple[int, V]] = {}  # key -> (partition, value)
        self._pending: dict[str, tuple[int, V]] = {}
        self.partitions: set[int] = set()

    def get(self, key: str) -> V | None:
        hit = self._pending.get(key) or self._committed.get(key)
        return None if hit is None or hit[1] is _DELETED else hit[1]

    def put(self, key: str, value: V, partition: int) -> Output:
        """Stage `value`; returns the changelog output to produce in the same transaction."""
        self._pending[key] = (partition, value)
        return Output(self.topic, key, self.encode(value), partition=partition)

    def delete(self, key: str, partition: int) -> Output:
        """Stage the removal of `key`; returns the tombstone to produce in the same transaction."""
        self._pending[key] = (partition, _DELETED)  # type: ignore[assignment]
        return Output(self.topic, key, None, partition=partition)

    def items(self) -> Iterator[tuple[str, int, V]]:
        """Every entry (pending over committed) as (key, partition, value)."""
        merged = {**self._committed, **self._pending}
        for key, (partition, value) in merged.items():
            if value is not _DELETED:
                yield key, partition, value

    def commit(self) -> None:
        for key, (partition, value) in self._pending.items():
            if value is _DELETED:
                self._committed.pop(key, None)
            else:
                self._committed[key] = (partition, value)
        self._pending.clear()

    def abort(self) -> None:
        self._pending.clear()

    def drop(self, partitions: set[int]) -> None:
        self._pending.clear()
        self._committed = {k: v for k, v in self._committed.items() if v[0] not in partitions}
        self.partitions -= partitions

    def _decode(self, raw: bytes, deadline: float) -> V:
        """Decode one entry; while the schema registry cannot answer, wait for it (up to `deadline`):
        a restore is complete or it does not happen."""
        pause = 0.5
        while True:
            try:
                return self.decode(raw)
            except Exception as exc:
                if not registry_unavailable(exc) or time.monotonic() + pause > deadline:
                    raise
                log.warning(
                    "restoring %s: schema registry unavailable (%s); retrying in %.1fs",
                    self.topic,
                    exc,
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, 10.0)

    def load(self, partitions: set[int], timeout_s: float = 60.0) -> int:
        """Read the changelog partitions from the beginning to their end. Returns entries loaded."""
        new = partitions - self.partitions
        if not new:
            return 0
        consumer = Consumer(
            {
                **client_config(self.settings),
                "group.id": self.group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # A restore reads what is there now: don't let the broker hold fetches open for more.
                "fetch.wait.max.ms": 10,
            }
        )
        loaded, t0 = 0, time.monotonic()
        waiting_logged: set[int] = set()
        try:
            # End-of-partition events (not offsets) tell when a partition is read: transaction markers
            # take offsets but are never delivered. A read_committed reader's end is the last stable
            # offset; a partition is read once that end reaches the high watermark first seen there.
            todo = set(new)
            targets: dict[int, int] = {}
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in todo])
            while todo:
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(
                        f"restoring {self.topic} {sorted(todo)} took over {timeout_s}s "
                        f"(ends {targets} not reached: a transaction stayed open)"
                    )
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        p = msg.partition() or 0
                        end = msg.offset() or 0
                        _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
                        target = targets.setdefault(p, max(high, end))
                        if end >= target:
                            todo.discard(p)
                        elif p not in waiting_logged:
                            waiting_logged.add(p)
                            log.info(
                                "restoring %s[%d]: an open transaction holds the end at %d of %d; waiting",
                                self.topic,
                                p,
                                end,
                                target,
                            )
                    continue
                key = (msg.key() or b"").decode()
                if msg.value() is None:
                    self._committed.pop(key, None)
                else:
                    value = self._decode(msg.value() or b"", t0 + timeout_s)
                    self._committed[key] = (msg.partition() or 0, value)
                    loaded += 1
        finally:
            consumer.close()
        self.partitions |= new
        log.info(
            "restored %d entries of %s partitions %s in %.2fs",
            loaded,
            self.topic,
            sorted(new),
            time.monotonic() - t0,
        )
        return loaded
