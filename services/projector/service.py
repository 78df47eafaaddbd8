"""The projector's loop: topics -> Postgres, exactly once (rows and offsets share a DB transaction).

A plain read_committed consumer without Kafka commits: Postgres holds the positions. On assignment
the consumer is placed at the stored offsets; every batch re-checks them under a row lock and, when
they moved (a rebuild swapped the tables in, or another instance wrote), writes nothing and seeks to
them instead. The database is the truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from keel import db
from keel.contracts import AuditRecord, ControlCommand, RunEvent
from keel.lag import LagSampler
from keel.looplife import raise_if_fatal, subscribed
from keel.metrics import metrics
from keel.metricsserver import MetricsSettings
from keel.producer import consumer_config
from keel.schemas import TOPIC_ENVELOPES
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import AUDIT, CONTROL, RUN_EVENTS
from services.projector.core import (
    Position,
    Projection,
    error_projection,
    project,
    project_action,
    project_command,
)
from services.projector.schema import DEFAULT_SCHEMA, ensure_schema
from services.projector.store import TP, UNKNOWN, ProjectionStore

log = logging.getLogger(__name__)
GROUP = "keel.projector"
# The facts, and for the audit trail the control commands (who cancelled, paused, decided) and the
# other actions (who redrove a dead letter, registered a definition).
TOPICS = (RUN_EVENTS, CONTROL, AUDIT)


def envelopes_of(topics: Sequence[str]) -> dict[str, str]:
    """Each topic's envelope: the catalogue's for Keel's topics, a RunEvent for any other (a test's)."""
    return {t: TOPIC_ENVELOPES.get(t, "run_event") for t in topics}


def to_projection(serde: Serde, msg: Message) -> Projection:
    """Decode and project one message; whatever cannot be is an error row, never an exception."""
    at = Position(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
    raw, key = msg.value(), msg.key()
    key_bytes = key.encode() if isinstance(key, str) else key
    if raw is None:
        return error_projection(at, "message has no value (tombstone)", "invalid", key_bytes, None)
    try:
        event = serde.decode(at.topic, raw)
        if not isinstance(event, RunEvent | ControlCommand | AuditRecord):
            raise TypeError(f"a {type(event).__name__}, not a RunEvent, ControlCommand or AuditRecord")
    except Exception as exc:  # any decoding failure means the bytes are unusable here
        return error_projection(at, f"cannot decode: {exc}", "undecodable", key_bytes, raw)
    try:
        if isinstance(event, RunEvent):
            return project(event, at)
        return project_command(event, at) if isinstance(event, ControlCommand) else project_action(event, at)
    except Exception as exc:
        log.exception("projecting %s failed", at)
        return error_projection(
            at, f"cannot project: {type(exc).__name__}: {exc}", "processing_error", key_bytes, raw
        )


def _count_errors(projections: list[Projection], written: dict[TP, int | None]) -> None:
    """The projector's dead letters: messages kept as projection_errors rows instead of projected, on
    the partitions whose batch was written (one whose stored offset had moved wrote nothing)."""
    ends = {(p.at.topic, p.at.partition): p.at.offset + 1 for p in projections}
    for p in projections:
        tp = (p.at.topic, p.at.partition)
        if written.get(tp) != ends[tp]:
            continue
        for change in p.changes:
            if change.table == "projection_errors":
                metrics().dead_letters.labels("projector", p.at.topic, change.values["error_class"]).inc()


def connect(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(db.database_url(settings, start=False), autocommit=True, connect_timeout=10)


class Projector:
    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str] = TOPICS,
        schema: str = DEFAULT_SCHEMA,
        group_id: str = GROUP,
        instance_id: str | None = None,
        serde: Serde | None = None,
        check_interval_s: float = 1.0,
    ) -> None:
        self.settings, self.topics, self.schema = settings, list(topics), schema
        self.check_interval_s = check_interval_s
        self.serde = serde or Serde(registry_client(settings.schema_registry_url), envelopes_of(topics))
        self.conn = connect(settings)
        db.migrate(self.conn)
        ensure_schema(self.conn, schema)
        self.store = ProjectionStore(self.conn, schema)
        self.consumer = Consumer(consumer_config(settings, group_id, instance_id))
        self.last_progress = time.monotonic()
        self.positions: dict[TP, int | None] = {}  # where each assigned partition's next batch starts
        self.batches = 0
        self._stop = threading.Event()
        self._failures = 0
        # Lag from the offsets stored in Postgres: this group commits none to Kafka.
        self.lag = LagSampler(
            self.consumer, group_id, MetricsSettings().lag_interval_s, self._stored_positions
        )

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> None:
        """Run until `stop()` or SIGTERM; the batch in hand is finished first."""
        with subscribed(
            self.consumer,
            self.topics,
            self._assigned,
            self._revoked,
            self._stop,
            lambda: self.last_progress,
            self.settings.stall_timeout_s,
        ):
            next_check = time.monotonic() + self.check_interval_s
            try:
                while not self._stop.is_set():
                    msgs = self.consumer.consume(
                        self.settings.batch_max_messages, self.settings.poll_timeout_s
                    )
                    if msgs:
                        self.process_batch(msgs)
                    self.last_progress = time.monotonic()
                    self.lag.maybe_sample()
                    if time.monotonic() >= next_check:
                        self.follow_stored_offsets()
                        next_check = time.monotonic() + self.check_interval_s
            finally:
                self.conn.close()

    def follow_stored_offsets(self) -> None:
        """Seek every assigned partition whose stored offset is not where this projector stands.

        Batches check their own partitions; this catches a swap on partitions that get no new messages,
        whose re-projected tail would otherwise wait for the next message to arrive there."""
        try:
            stored = self.store.stored_offsets(self.positions)
        except psycopg.Error as exc:
            log.warning("cannot read stored offsets: %s", exc)
            self._repair(exc)
            return
        for tp, offset in stored.items():
            if tp in self.positions and self.positions[tp] != offset:
                log.info("stored offset of %s[%d] moved to %s: seeking there", *tp, offset)
                self._seek(tp, offset)

    def _stored_positions(self, partitions: list[TopicPartition]) -> dict[TP, int | None]:
        return {tp: (at if at != UNKNOWN else None) for tp, at in self.positions.items()}

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        try:
            stored = self.store.stored_offsets(tps)
        except psycopg.Error as exc:  # the first batch will find the stored offsets and seek there
            log.warning("cannot read stored offsets (%s): starting from the beginning", exc)
            stored = dict.fromkeys(tps, UNKNOWN)
        for tp in partitions:
            offset = stored[(tp.topic, tp.partition)]
            tp.offset = OFFSET_BEGINNING if offset is None or offset == UNKNOWN else offset
            self.positions[(tp.topic, tp.partition)] = offset
        if self.settings.group_protocol == "consumer":
            consumer.incremental_assign(partitions)  # KIP-848 hands out changes, not the whole set
        else:
            consumer.assign(partitions)
        log.info("assigned %s", {f"{t}[{p}]": o for (t, p), o in stored.items()})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)

    def process_batch(self, msgs: list[Message]) -> None:
        projections: list[Projection] = []
        firsts: dict[TP, int] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                raise_if_fatal(err)
                continue
            tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
            if tp not in self.positions:
                continue  # revoked meanwhile: its new owner reads it
            position = self.positions[tp]
            if position is not None and position != UNKNOWN and offset < position:
                continue  # fetched before a seek: already stored
            firsts.setdefault(tp, offset)
            projections.append(to_projection(self.serde, msg))
        if not projections:
            return
        ends = {(p.at.topic, p.at.partition): p.at.offset + 1 for p in projections}
        try:
            stored = self.store.write(projections, {tp: self.positions[tp] for tp in firsts})
        except psycopg.Error as exc:
            self._database_failed(exc, firsts)
            return
        self._failures = 0
        _count_errors(projections, stored)
        for tp, now in stored.items():
            self.positions[tp] = now
            if now != ends[tp]:
                log.info("stored offset of %s[%d] is %s, not %d: seeking there", *tp, now, ends[tp])
                self._seek(tp, now)
        self.batches += 1

    def _database_failed(self, exc: Exception, firsts: dict[TP, int]) -> None:
        """Whether the commit landed is unknown: read the batch again and let the offsets decide."""
        self._failures += 1
        log.warning("database error (%s): batch will be read again", exc)
        for tp, first in firsts.items():
            self._seek(tp, first)
            self.positions[tp] = UNKNOWN
        self._stop.wait(min(0.1 * 2**self._failures, 5.0))
        self._repair(exc)

    def _repair(self, exc: Exception) -> None:
        try:
            if self.conn.closed or self.conn.broken:
                self.conn = connect(self.settings)
                self.store = ProjectionStore(self.conn, self.schema)
            if isinstance(exc, psycopg.errors.UndefinedTable):
                # Someone dropped the projections: they are disposable, so build them again from 0.
                ensure_schema(self.conn, self.schema)
        except psycopg.Error as again:
            log.warning("database still unavailable: %s", again)

    def _seek(self, tp: TP, offset: int | None) -> None:
        """Place the consumer at `offset` and remember it; when that fails, where it stands is unknown."""
        target = OFFSET_BEGINNING if offset is None or offset == UNKNOWN else offset
        try:
            self.consumer.seek(TopicPartition(tp[0], tp[1], target))
            self.positions[tp] = offset
        except KafkaException as exc:  # e.g. revoked meanwhile: its new owner starts from the stored offsets
            log.info("not seeking %s[%d]: %s", *tp, exc)
            if tp in self.positions:
                self.positions[tp] = UNKNOWN
