"""The tracer's loop: keel.run-events -> spans over OTLP, at least once.

A plain read_committed consumer in group `keel-tracer`, off every run's path. Each run's events are held
(core.RunBuffer) until the run ends or goes idle, turned into spans (keel.tracing.spans_of) and handed
to the exporter; a partition's offset is committed only up to its oldest run not yet accepted by the
exporter, so a crash re-reads and re-exports (same span ids) what was not accepted. A collector that
refuses a batch is tried again every KEEL_TRACER_RETRY_S; meanwhile reading is paused (held runs would
pile up in memory) and nothing of the refused runs is committed. A message that is not a readable run
event is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter

from keel.contracts import RunEvent
from keel.looplife import raise_if_fatal, subscribed
from keel.producer import consumer_config
from keel.registryerrors import registry_unavailable
from keel.schemas import TOPIC_ENVELOPES
from keel.serde import Serde, registry_client
from keel.topics import RUN_EVENTS
from keel.tracing import SpanData, spans_of
from services.tracer.config import TracerSettings
from services.tracer.core import TP, RunBatch, RunBuffer
from services.tracer.export import export, resource

log = logging.getLogger(__name__)
# Spans per OTLP request, about: collectors refuse requests past a few MB (4 MB by default).
SPANS_PER_EXPORT = 512


class Tracer:
    def __init__(
        self,
        settings: TracerSettings,
        exporter: SpanExporter,
        *,
        topic: str = RUN_EVENTS,
        group_id: str | None = None,
        instance_id: str | None = None,
        res: Resource | None = None,
    ) -> None:
        self.settings, self.exporter, self.topic = settings, exporter, topic
        self.group = group_id or settings.tracer_group
        self.resource = res or resource()
        self.serde = Serde(
            registry_client(settings.schema_registry_url), {**TOPIC_ENVELOPES, topic: "run_event"}
        )
        conf = consumer_config(settings, self.group, instance_id)
        conf["auto.offset.reset"] = settings.tracer_start
        self.consumer = Consumer(conf)
        self.buffer = RunBuffer(settings.tracer_idle_s, settings.tracer_max_run_events)
        self.to_export: list[RunBatch] = []
        self.retry_at = 0.0
        self.paused = False
        self.exported_runs = 0
        self.last_progress = time.monotonic()
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> None:
        """Until `stop()` or SIGTERM; what was exported by then is committed, the rest is read again."""
        with subscribed(
            self.consumer,
            [self.topic],
            self._assigned,
            self._revoked,
            self._stop,
            lambda: self.last_progress,
            self.settings.stall_timeout_s,
        ):
            next_commit = time.monotonic() + self.settings.tracer_commit_interval_s
            try:
                while not self._stop.is_set():
                    self.pace()
                    first = self.consumer.poll(self.settings.poll_timeout_s)
                    if first is not None:
                        rest = self.consumer.consume(self.settings.batch_max_messages - 1, 0)
                        self.handle_batch([first, *rest])
                    self.flush(time.monotonic())
                    self.last_progress = time.monotonic()
                    if time.monotonic() >= next_commit:
                        self.commit()
                        next_commit = time.monotonic() + self.settings.tracer_commit_interval_s
            finally:
                self.commit()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.buffer.assign((tp.topic, tp.partition))
        self.paused = False  # a new assignment reads; pace() pauses it again while exports are refused
        log.info("assigned %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit()  # what was exported so far; the rest is the next owner's to export
        for tp in partitions:
            self.buffer.revoke((tp.topic, tp.partition))
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.to_export = [b for b in self.to_export if b.tp not in revoked]

    def handle_batch(self, msgs: list[Message]) -> None:
        """Read messages in order; a partition whose message waits for the schema registry is read
        again from that message a moment later."""
        again: dict[TP, int] = {}
        now = time.monotonic()
        for msg in msgs:
            tp: TP = (msg.topic() or "", msg.partition() or 0)
            if tp in again:
                continue
            err = msg.error()
            if err is not None:
                raise_if_fatal(err)
                continue
            offset = msg.offset() or 0
            try:
                event = self._decode(msg)
            except Exception as exc:
                if registry_unavailable(exc):
                    log.warning("schema registry unavailable (%s): %s[%d]@%d is read again", exc, *tp, offset)
                    again[tp] = offset
                    continue
                log.warning("cannot read %s[%d]@%d (no spans from it): %s", *tp, offset, exc)
                event = None
            self.buffer.read(tp, offset, event, now)
        for (topic, partition), offset in again.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its new owner reads it
                log.info("not seeking %s[%d]: %s", topic, partition, exc)
        if again:
            self._stop.wait(1.0)

    def _decode(self, msg: Message) -> RunEvent | None:
        raw = msg.value()
        event = self.serde.decode(self.topic, raw) if raw is not None else None
        return event if isinstance(event, RunEvent) else None

    def flush(self, now: float) -> None:
        """Export the runs that are ready (and those the collector refused before, when it is time), in
        requests of about SPANS_PER_EXPORT spans; the runs of a refused request and after wait."""
        self.to_export += self.buffer.ready(now)
        if not self.to_export or now < self.retry_at:
            return
        while self.to_export:
            chunk: list[RunBatch] = []
            spans: list[SpanData] = []
            while self.to_export and (not chunk or len(spans) < SPANS_PER_EXPORT):
                batch = self.to_export.pop(0)
                chunk.append(batch)
                spans += spans_of(batch.events)
            try:
                accepted = export(self.exporter, spans, self.resource)
            except Exception as exc:  # an exporter bug must not stop the loop; the runs stay unexported
                log.exception("exporting %d spans failed: %s", len(spans), exc)
                accepted = False
            if not accepted:
                self.to_export[:0] = chunk
                self.retry_at = now + self.settings.tracer_retry_s
                log.warning(
                    "%d spans of %d runs not accepted (%d runs wait); again in %.1fs",
                    len(spans),
                    len(chunk),
                    len(self.to_export),
                    self.settings.tracer_retry_s,
                )
                return
            self.buffer.settle(chunk)
            self.exported_runs += len(chunk)

    def pace(self) -> None:
        """Stop reading while the collector refuses (held runs would only pile up in memory), and go on
        once it accepts again; the consumer keeps polling, so the group keeps this member."""
        assignment = self.consumer.assignment()
        if not self.paused and self.to_export and assignment:
            self.consumer.pause(assignment)
            self.paused = True
            log.warning("the collector refuses spans: reading paused")
        elif self.paused and not self.to_export:
            self.consumer.resume(assignment)
            self.paused = False
            self.buffer.touch(time.monotonic())  # runs were quiet because reading was paused, not idle
            log.info("the collector accepts spans again: reading resumed")

    def commit(self) -> None:
        positions = self.buffer.positions()
        if not positions:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False
            )
        except KafkaException as exc:  # e.g. mid-rebalance: the next commit tries again
            log.info("commit of %s not done: %s", positions, exc)
            return
        self.buffer.committed(positions)
