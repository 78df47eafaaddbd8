"""Follows the definitions topic in the background: read to its end at start, then every new record.

Read_committed, from the beginning, with a consumer of its own (no group offsets: every process reads
the whole topic; definitions are few). `refresh` waits, bounded, until what the topic held when it was
called has been read: a version applied a moment ago elsewhere is then known here too."""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from keel.definitions.log import candidate, serde_for
from keel.definitions.record import Candidate, winners
from keel.producer import client_config
from keel.registryerrors import registry_unavailable
from keel.settings import Settings
from keel.topics import DEFINITIONS

log = logging.getLogger(__name__)


class DefinitionsReader:
    def __init__(self, settings: Settings, topic: str = DEFINITIONS, start_timeout_s: float = 15.0) -> None:
        self.topic = topic
        self._serde = serde_for(settings, topic)
        self._consumer = Consumer(
            {
                **client_config(settings),
                "group.id": f"keel-definitions-{uuid.uuid4().hex[:10]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 100,
            }
        )
        self._tp = TopicPartition(topic, 0)
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._cond = threading.Condition()
        self._records: list[Candidate] = []
        self.generation = 0  # bumped with every record read: views rebuild when it moves
        self._position = 0  # next offset to read
        self._asked = self._served = 0  # refresh requests made / answered
        self._target: int | None = None
        self._covers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="definitions", daemon=True)
        self._thread.start()
        if not self.refresh(start_timeout_s):
            log.warning("definitions: %s not read to its end within %.0fs; going on", topic, start_timeout_s)

    # -- readers' side -------------------------------------------------------------------------------
    def records(self) -> list[Candidate]:
        with self._cond:
            return list(self._records)

    def definitions(self, kind: str) -> dict[tuple[str, int], Candidate]:
        """The winning record of each name@version of `kind` (see keel.definitions.record.winners)."""
        return {(c.name, c.version): c for c in winners(self.records()).values() if c.kind == kind}

    def refresh(self, timeout_s: float) -> bool:
        """Wait until the topic has been read up to where it ends now; False on timeout."""
        with self._cond:
            self._asked += 1
            asked = self._asked
            return self._cond.wait_for(lambda: self._served >= asked, timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    # -- the reading thread (the only one touching the consumer) -----------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._take_request()
                msg = self._consumer.poll(0.1)
                if msg is not None:
                    self._read(msg)
                self._answer()
        finally:
            self._consumer.close()

    def _take_request(self) -> None:
        with self._cond:
            pending = self._asked > self._served and self._target is None
            covers = self._asked  # the requests this end answers (later ones ask the broker again)
        if not pending:
            return
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp, timeout=5, cached=False)
        except KafkaException as exc:  # no topic yet: nothing registered, so nothing to wait for
            log.warning("definitions: cannot ask where %s ends: %s", self.topic, exc)
            high = 0
        with self._cond:
            self._target, self._covers = high, covers

    def _read(self, msg: object) -> None:
        err = msg.error()  # type: ignore[attr-defined]
        offset = msg.offset() or 0  # type: ignore[attr-defined]
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                with self._cond:
                    self._position = max(self._position, offset)
            return
        found = None
        while not self._stop.is_set():
            try:
                found = candidate(self._serde.decode(self.topic, msg.value()), offset)  # type: ignore[attr-defined]
                break
            except Exception as exc:
                if registry_unavailable(exc):  # not the record's fault: skipping it would lose a definition
                    log.warning("definitions: the schema registry does not answer (%s); retrying", exc)
                    self._stop.wait(1.0)
                    continue
                # Bytes that can never decode: say which record and go on following the topic.
                log.error("definitions: skipping the record at %s:0:%d: %s", self.topic, offset, exc)
                break
        with self._cond:
            if found is not None:
                self._records.append(found)
                self.generation += 1
            self._position = offset + 1

    def _answer(self) -> None:
        with self._cond:
            if self._target is not None and self._position >= self._target:
                self._served, self._target = self._covers, None
                self._cond.notify_all()
