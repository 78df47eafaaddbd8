"""Recovery time measured from outside: from a kill to the first output of the victim's partitions.

Before a kill, the consumer group says which input partitions the victim owns. The run-keyed topics
are co-partitioned, so the victim's outputs land on the same partition numbers of keel.run-events,
stamped with the service's name in `source`. A watcher tails keel.run-events (read_committed) and
notes, per (source, partition), when each committed message was produced. Recovery is the time from
the kill to the first message of that source on one of those partitions produced after the kill: only
a live successor (the restarted instance, or another one that took the partitions over) can have
produced it. The projector writes to Postgres, so its recovery is read from its stored offsets.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import psycopg
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS


def owned_partitions(settings: Settings, service: str, instance: str) -> set[int] | None:
    """Partition numbers the instance is assigned now (None when the group cannot say)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    member = f"keel-{service}-{instance}"
    try:
        group = admin.describe_consumer_groups([f"keel-{service}"], request_timeout=5)[
            f"keel-{service}"
        ].result(10)
    except Exception:
        return None
    for m in group.members:
        if m.group_instance_id == member and m.assignment is not None:
            return {tp.partition for tp in m.assignment.topic_partitions}
    return None


class OutputWatch:
    """Tails keel.run-events from its end; remembers the produce time of every committed message."""

    def __init__(self, settings: Settings) -> None:
        self.serde = Serde(registry_client(settings.schema_registry_url))
        self._seen: dict[tuple[str, int], list[float]] = defaultdict(list)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"chaos-watch-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        parts = self._consumer.list_topics(RUN_EVENTS, timeout=10).topics[RUN_EVENTS].partitions
        self._consumer.assign([TopicPartition(RUN_EVENTS, p, OFFSET_END) for p in parts])
        self._thread = threading.Thread(target=self._run, name="chaos-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error() or msg.value() is None:
                continue
            try:
                source = self.serde.decode(RUN_EVENTS, msg.value()).source
            except Exception:  # the registry may be down for a moment: the time still counts
                continue
            with self._lock:
                self._seen[(source, msg.partition() or 0)].append(msg.timestamp()[1] / 1000)
        self._consumer.close()

    def first_after(self, source: str, partitions: set[int], since: float) -> float | None:
        with self._lock:
            times = [t for p in partitions for t in self._seen.get((source, p), []) if t > since]
        return min(times) if times else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def projector_moved_after(db_url: str, partitions: set[int], since: float, timeout: float) -> float | None:
    """When the projector's stored offset of one of `partitions` first moves after `since`."""
    with psycopg.connect(db_url, autocommit=True) as conn:

        def offsets() -> dict[int, int]:
            rows = conn.execute(
                "SELECT partition, next_offset FROM keel.projector_offsets WHERE topic = %s", (RUN_EVENTS,)
            ).fetchall()
            return {p: o for p, o in rows if p in partitions}

        start = offsets()
        deadline = time.time() + timeout
        while time.time() < deadline:
            now = offsets()
            if any(now.get(p, 0) > start.get(p, 0) for p in partitions):
                return time.time()
            time.sleep(0.1)
    return None
