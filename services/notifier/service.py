"""The notifier's loop: keel.run-events -> per-tenant webhooks, at least once.

A plain read_committed consumer in group `keel-notifier`, apart from every run's own path: a slow
receiver never holds a run back. Each notifying event goes to its tenant's worker (delivery.py); the
offset of a partition is committed only up to its oldest notification not yet delivered or given up
(watermark.py), so a crash at any moment re-reads, and re-sends, what was not settled. A notification
given up is recorded first (a dead letter on keel.dead-letters, produced and acknowledged) and only then
settled. Receivers deduplicate on Keel-Event-Id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from keel.contracts import RunEvent
from keel.deadletter import dead_letter_for
from keel.looplife import raise_if_fatal, subscribed
from keel.producer import consumer_config, producer_config
from keel.registryerrors import registry_unavailable
from keel.schemas import TOPIC_ENVELOPES
from keel.serde import Serde, registry_client
from keel.topics import DEAD_LETTERS, RUN_EVENTS
from services.notifier.config import NotifierSettings
from services.notifier.core import notification_for
from services.notifier.delivery import Job, Outcome, TenantWorker
from services.notifier.watermark import TP, Watermarks

log = logging.getLogger(__name__)
GROUP = "keel-notifier"
GAVE_UP = "webhook_undeliverable"  # the dead letter's error class


def log_line(**fields: Any) -> None:
    """The one structured line each notification ends with (delivered, gave_up or no_webhook)."""
    log.info("notification %s", json.dumps(fields, sort_keys=True, default=str))


class Notifier:
    def __init__(
        self,
        settings: NotifierSettings,
        *,
        topic: str = RUN_EVENTS,
        dead_letters: str = DEAD_LETTERS,
        group_id: str = GROUP,
        instance_id: str | None = None,
    ) -> None:
        # Configuration errors surface here, before anything connects: the process exits saying why.
        self.endpoints = settings.endpoints()
        self.public_url = settings.checked_public_url()
        self.policy = settings.policy()
        self.settings, self.topic, self.dead_letters, self.group = settings, topic, dead_letters, group_id
        envelopes = {**TOPIC_ENVELOPES, topic: "run_event", dead_letters: "dead_letter"}
        self.serde = Serde(registry_client(settings.schema_registry_url), envelopes)
        conf = consumer_config(settings, group_id, instance_id)
        conf["auto.offset.reset"] = settings.notifier_start
        self.consumer = Consumer(conf)
        self.producer = Producer(producer_config(settings))
        self.marks, self.lock, self._letters = Watermarks(), threading.Lock(), threading.Lock()
        self.workers: dict[str, TenantWorker] = {}
        self.paused = False
        self.last_progress = time.monotonic()
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> None:
        """Until `stop()` or SIGTERM; what is settled by then is committed, the rest is read again."""
        with subscribed(
            self.consumer,
            [self.topic],
            self._assigned,
            self._revoked,
            self._stop,
            lambda: self.last_progress,
            self.settings.stall_timeout_s,
        ):
            next_commit = time.monotonic() + self.settings.notifier_commit_interval_s
            try:
                while not self._stop.is_set():
                    self._pace()
                    first = self.consumer.poll(self.settings.poll_timeout_s)
                    if first is not None:
                        rest = self.consumer.consume(self.settings.batch_max_messages - 1, 0)
                        self.handle_batch([first, *rest])
                    self.last_progress = time.monotonic()
                    if time.monotonic() >= next_commit:
                        self.commit()
                        next_commit = time.monotonic() + self.settings.notifier_commit_interval_s
            finally:
                self._stop.set()  # the workers finish the attempt in hand and stop
                for worker in self.workers.values():
                    worker.join(self.policy.timeout_s + 1)
                self.commit()

    # -- partitions ---------------------------------------------------------------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Resume each partition at its committed offset; a partition the group never committed starts
        as KEEL_NOTIFIER_START says, and that start is committed at once (a restart resumes there)."""
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            found = tp.offset if tp.offset >= 0 else None
            if found is None:
                low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                tp.offset = high if self.settings.notifier_start == "latest" else low
            with self.lock:
                self.marks.assign((tp.topic, tp.partition), tp.offset, found)
        if self.settings.group_protocol == "consumer":
            consumer.incremental_assign(committed)
        else:
            consumer.assign(committed)
        self.paused = False
        log.info("assigned %s", {f"{tp.topic}[{tp.partition}]": tp.offset for tp in committed})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit()  # what is settled so far; the rest is the next owner's to send
        with self.lock:
            for tp in partitions:
                self.marks.revoke((tp.topic, tp.partition))

    # -- messages -----------------------------------------------------------------------------------
    def handle_batch(self, msgs: list[Message]) -> None:
        """Handle messages in order; a partition whose message waits for the schema registry is read
        again from that message a moment later (nothing after it is handled before it)."""
        again: dict[TP, int] = {}
        for msg in msgs:
            tp = (msg.topic() or "", msg.partition() or 0)
            if tp not in again and not self.handle(msg):
                again[tp] = msg.offset() or 0
        for (topic, partition), offset in again.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its new owner reads it
                log.info("not seeking %s[%d]: %s", topic, partition, exc)
        if again:
            self._stop.wait(1.0)

    def handle(self, msg: Message) -> bool:
        """Read one message; False when it cannot be read yet (the schema registry did not answer)."""
        err = msg.error()
        if err is not None:
            raise_if_fatal(err)
            return True
        tp: TP = (msg.topic() or "", msg.partition() or 0)
        offset = msg.offset() or 0
        with self.lock:
            generation = self.marks.generation(tp)
        if generation is None:
            return True  # revoked meanwhile: its new owner reads it
        note = None
        raw = msg.value()
        try:
            event = self.serde.decode(self.topic, raw) if raw is not None else None
            if event is not None and isinstance(event, RunEvent):
                note = notification_for(event, self.public_url)
        except Exception as exc:
            if registry_unavailable(exc):
                log.warning("schema registry unavailable (%s): %s[%d]@%d is read again", exc, *tp, offset)
                return False
            # Bytes that can never decode: the scheduler and the projector record them; no one to notify.
            log.warning("cannot read %s[%d]@%d (no notification from it): %s", *tp, offset, exc)
        endpoint = self.endpoints.get(note.tenant_id) if note is not None else None
        with self.lock:
            self.marks.read(tp, offset, pending=endpoint is not None)
        if note is None:
            return True
        if endpoint is None:
            log_line(
                id=note.event_id,
                type=note.type,
                tenant_id=note.tenant_id,
                run_id=note.run_id,
                case_id=note.case_id,
                outcome="no_webhook",
            )
            return True
        worker = self.workers.get(note.tenant_id)
        if worker is None:
            worker = TenantWorker(note.tenant_id, endpoint, self.policy, self._owned, self.settle, self._stop)
            self.workers[note.tenant_id] = worker
        worker.submit(Job(note, tp, offset, generation, msg))
        return True

    def _owned(self, job: Job) -> bool:
        with self.lock:
            return self.marks.owns(job.tp, job.generation)

    def settle(self, outcome: Outcome) -> bool:
        """Record how a notification ended; False when a give-up could not be recorded yet."""
        job, note = outcome.job, outcome.job.notification
        if outcome.result == "gave_up" and not self._dead_letter(outcome):
            return False
        log_line(
            id=note.event_id,
            type=note.type,
            tenant_id=note.tenant_id,
            run_id=note.run_id,
            case_id=note.case_id,
            outcome=outcome.result,
            attempts=outcome.attempts,
            status=outcome.last.status,
            reason=outcome.reason or None,
            ms=outcome.elapsed_ms,
        )
        with self.lock:
            self.marks.settle(job.tp, job.offset, job.generation)
        return True

    def _dead_letter(self, outcome: Outcome) -> bool:
        job = outcome.job
        url = self.endpoints[job.notification.tenant_id].url
        reason = (
            f"webhook {job.notification.type} {job.notification.event_id} for tenant "
            f"{job.notification.tenant_id} to {url} given up: {outcome.reason}"
        )
        letter = dead_letter_for(
            job.message, reason, GAVE_UP, self.group, max_bytes=self.settings.max_message_bytes
        )
        acks: list[Any] = []
        try:
            with self._letters:  # one give-up at a time: workers share the serde and the producer
                self.producer.produce(
                    self.dead_letters,
                    key=letter.dead_letter_id,
                    value=self.serde.encode(self.dead_letters, letter),
                    on_delivery=lambda err, _msg: acks.append(err),
                )
                self.producer.flush(10)
        except (KafkaException, BufferError) as exc:
            log.error("cannot record the give-up of %s: %s", job.notification.event_id, exc)
            return False
        if acks != [None]:
            log.error("cannot record the give-up of %s: %s", job.notification.event_id, acks)
            return False
        log.warning("dead letter %s: %s", letter.dead_letter_id, reason)
        return True

    # -- offsets and pace ----------------------------------------------------------------------------
    def commit(self) -> None:
        with self.lock:
            positions = self.marks.to_commit()
        if not positions:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False
            )
        except KafkaException as exc:  # e.g. mid-rebalance: the next commit tries again
            log.info("commit of %s not done: %s", positions, exc)
            return
        with self.lock:
            self.marks.committed(positions)

    def _pace(self) -> None:
        """Stop reading while too many notifications wait (a dead endpoint's backlog), and go on below
        half of it; the consumer keeps polling, so the group keeps this member."""
        with self.lock:
            pending = self.marks.pending()
        limit = self.settings.notifier_max_pending
        assignment = self.consumer.assignment()
        if not self.paused and pending >= limit and assignment:
            self.consumer.pause(assignment)
            self.paused = True
            log.warning("%d notifications pending: reading paused", pending)
        elif self.paused and pending < limit // 2 + 1:
            self.consumer.resume(assignment)
            self.paused = False
            log.info("%d notifications pending: reading resumed", pending)
