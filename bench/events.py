"""Keel's side of the measurement: every run event of the bench's runs, read from keel.run-events.

Read from the end offsets at start (the topic may hold other runs' history), read_committed as any
downstream reader would see them. Each event becomes a `Mark` at its `ts`; the Kafka timestamp is kept
beside it to show how far the two clocks sit apart.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from confluent_kafka import Consumer, TopicPartition

from bench.stats import Mark
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS

TERMINAL = frozenset({"completed", "failed", "canceled", "quarantined"})


class EventCollector:
    def __init__(self, settings: Settings, run_prefix: str) -> None:
        self.prefix = run_prefix
        self.serde = Serde(registry_client(settings.schema_registry_url))
        self.marks: list[Mark] = []
        self.kafka_lag_s: list[float] = []  # Kafka timestamp minus the event's ts
        self.terminal: dict[str, str] = {}
        self.kinds: dict[str, int] = defaultdict(int)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"bench-events-{run_prefix}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "socket.nagle.disable": True,
                "fetch.wait.max.ms": 10,
            }
        )
        parts = self._consumer.list_topics(RUN_EVENTS, timeout=10).topics[RUN_EVENTS].partitions
        assignment = []
        for p in parts:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(RUN_EVENTS, p), timeout=10)
            assignment.append(TopicPartition(RUN_EVENTS, p, high))
        self._consumer.assign(assignment)
        self._thread = threading.Thread(target=self._run, name="bench-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.1):
                if msg.error() is not None:
                    continue
                key = msg.key() or b""
                # The bench's own runs: its prefix, or Keel's id of a run id it chose over the API.
                if not key.startswith((self.prefix.encode(), b"run-")):
                    continue  # another client's run: not decoded at all
                event = self.serde.decode(RUN_EVENTS, msg.value() or b"")
                t = event.ts.timestamp()
                with self._lock:
                    self.marks.append(Mark(event.run_id, event.step, event.event, t))
                    self.kinds[event.event] += 1
                    _, kafka_ms = msg.timestamp()
                    self.kafka_lag_s.append(kafka_ms / 1000.0 - t)
                    if event.event in TERMINAL:
                        self.terminal.setdefault(event.run_id, event.event)
        self._consumer.close()

    def ended(self, runs: set[str] | dict[str, float]) -> int:
        with self._lock:
            return sum(1 for r in runs if r in self.terminal)

    def snapshot(self, runs: set[str] | dict[str, float]) -> list[Mark]:
        with self._lock:
            return [m for m in self.marks if m.run_id in runs]

    def outcomes(self, runs: set[str] | dict[str, float]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for r in runs:
                out[self.terminal.get(r, "unfinished")] += 1
        return dict(out)

    def wait_ended(self, runs: dict[str, float], timeout: float, progress: str) -> bool:
        """Until every run in `runs` has ended, printing progress every few seconds."""
        deadline, last = time.monotonic() + timeout, 0.0
        while time.monotonic() < deadline:
            done = self.ended(runs)
            if done >= len(runs):
                return True
            if time.monotonic() - last > 5:
                print(f"bench:   {progress}: {done}/{len(runs)} runs ended", flush=True)
                last = time.monotonic()
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
