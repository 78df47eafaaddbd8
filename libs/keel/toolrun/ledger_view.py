"""A tool runner's own view of the compacted ledger topic: which idempotency keys are committed."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from keel.contracts import LedgerRecord
from keel.producer import client_config
from keel.serde import Serde
from keel.settings import Settings
from keel.toolrun.retention import DEFAULT_HORIZON_S, CommittedKeys
from keel.topics import LEDGER

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class LedgerView:
    """Tails every partition of keel.ledger in a background thread. A lagging view is safe: the provider
    deduplicates on the same key; the view spares the provider the call. Keys are held only for the
    retention horizon (KEEL_RETENTION_HORIZON_S) after their commit; see CommittedKeys for what answers
    a key beyond it."""

    def __init__(
        self, settings: Settings, serde: Serde, topic: str = LEDGER, horizon_s: float = DEFAULT_HORIZON_S
    ) -> None:
        self.serde, self.topic = serde, topic
        self.commits = CommittedKeys(horizon_s)
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **client_config(settings),
                "group.id": "keel-ledger-view",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        meta = self._consumer.list_topics(topic, timeout=30).topics[topic]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self._thread = threading.Thread(target=self._tail, name="ledger-view", daemon=True)
        self._thread.start()

    def get(self, key: str) -> LedgerRecord | None:
        return self.commits.get(key, _now_ms())

    def _tail(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error() or msg.value() is None:
                continue
            try:
                record: LedgerRecord = self.serde.decode(self.topic, msg.value() or b"")
            except Exception:  # the ledger service dead-letters what it cannot read; skip it here
                log.exception("unreadable ledger record at %s:%s", msg.partition(), msg.offset())
                continue
            self.commits.put(record, _now_ms())
        self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
