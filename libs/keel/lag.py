"""Consumer lag per partition, sampled on the loop's own thread: committed offset vs high watermark.

Sampled every `interval_s` (KEEL_METRICS_LAG_INTERVAL_S), not per batch: reading committed offsets is a
round trip to the group coordinator. On the loop's thread because a consumer is not to be shared with
another thread across its close. A partition written by transactions shows 1 at rest: the last
transaction's commit marker takes an offset that no consumer ever reads past.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from keel.metrics import Metrics, metrics

log = logging.getLogger(__name__)
TP = tuple[str, int]
# Where a group stands on its partitions: the offsets Kafka holds for it by default (the projector
# keeps its own in Postgres and passes them in).
Committed = Callable[[list[TopicPartition]], dict[TP, int | None]]


def kafka_committed(consumer: Consumer, timeout_s: float = 2.0) -> Committed:
    def read(partitions: list[TopicPartition]) -> dict[TP, int | None]:
        got = consumer.committed(partitions, timeout=timeout_s)
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in got}

    return read


class LagSampler:
    def __init__(
        self,
        consumer: Consumer,
        group: str,
        interval_s: float,
        committed: Committed | None = None,
        registry: Metrics | None = None,
    ) -> None:
        self.consumer, self.group, self.interval_s = consumer, group, interval_s
        self.committed = committed or kafka_committed(consumer)
        self._metrics = registry
        self._next = 0.0
        self._shown: set[TP] = set()

    @property
    def metrics(self) -> Metrics:
        return self._metrics or metrics()

    def maybe_sample(self) -> None:
        """Sample when the interval has passed; a failure is logged and waits for the next interval (a
        metric never stops the loop)."""
        now = time.monotonic()
        if self.interval_s <= 0 or now < self._next:
            return
        self._next = now + self.interval_s
        try:
            self.sample()
        except (KafkaException, RuntimeError) as exc:
            log.info("consumer lag not sampled this time: %s", exc)

    def sample(self) -> dict[TP, int]:
        partitions = self.consumer.assignment()
        committed = self.committed(partitions) if partitions else {}
        lags: dict[TP, int] = {}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            # The fetcher's cached watermarks cost no round trip (the loop is waiting); a partition
            # not fetched yet has none, and is asked for.
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if low < 0 or high < 0:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=2.0, cached=False)
            at = committed.get(key)
            # Nothing committed yet: the group will read the partition from its start (low watermark).
            start = at if at is not None else low
            lags[key] = max(0, high - start)
        for key, lag in lags.items():
            self.metrics.lag.labels(self.group, key[0], str(key[1])).set(lag)
        for gone in self._shown - lags.keys():  # revoked: another instance reports them now
            self.metrics.lag.remove(self.group, gone[0], str(gone[1]))
        self._shown = set(lags)
        return lags
