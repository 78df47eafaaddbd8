"""The transactional consume -> process -> produce loop every exactly-once service runs in.

One Kafka transaction per poll batch: the outputs, the dead letters and the consumed offsets commit
together or not at all. On an abortable error the transaction is aborted and the consumer rewinds to
the first offset of the batch, so the batch is processed again; a fenced or fatal producer is rebuilt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

import keel.events as ev
from keel.deadletter import dead_letter_for
from keel.dlq import history_of
from keel.looplife import raise_if_fatal, subscribed
from keel.producer import consumer_config, producer_config
from keel.serde import Contract, Serde
from keel.settings import Settings
from keel.topics import DEAD_LETTERS

log = logging.getLogger(__name__)
# (topic, key, value bytes, headers, partition) ready to produce
_Encoded = tuple[str, str | None, bytes | None, list[tuple[str, bytes]], int | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, decoded into its contract type."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce inside the batch's transaction.

    `value` is a contract record (encoded with the topic's envelope), raw bytes (internal changelogs) or
    None (a tombstone: removes the key from a compacted topic).
    `partition` pins the partition, e.g. a changelog written beside the input partition it belongs to.
    """

    topic: str
    key: str | None
    value: Contract | bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """Work to do once the batch (and its offsets) committed: a call to the outside world, whose outputs
    commit in a second, short transaction. Nothing is held open across the call. A crash between the two
    loses the work, not the message: whoever waits for its result times out and retries it."""

    work: Callable[[], Sequence[Output]]


Handled = Output | AfterCommit


class StuckTransaction(RuntimeError):
    """A transactional call blocked past its deadline: the producer is abandoned and replaced."""


class Reject(Exception):  # noqa: N818 - it is a verdict, not an error of the loop
    """Raised by a processor for a message it must not process: the message is dead-lettered."""

    def __init__(self, reason: str, error_class: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


class Processor:
    """What a service plugs into the loop. Subclass and override `handle`; hooks are optional.

    `concurrency` > 1 lets the loop handle a batch's messages on that many threads (for processors that
    wait on the outside world, e.g. model and provider calls); outputs keep the messages' order.
    """

    concurrency = 1
    max_batch: int | None = None  # at most this many messages per batch (None: the settings' limit)

    def handle(self, record: Record) -> Sequence[Handled]:
        raise NotImplementedError

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        """Partitions were assigned: stateful processors (re)load their state for them."""

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Partitions were taken away."""

    def on_abort(self) -> None:
        """The batch's transaction was aborted: drop state changed since the last commit."""

    def on_commit(self) -> None:
        """The batch's transaction committed: state changed since the last commit is now durable."""

    def tick(self, now_ms: int) -> Sequence[Output]:
        """Called on every loop turn, with or without messages: fire due timers. Outputs commit in the
        same transaction as the batch (or alone when there is none)."""
        return ()


class TransactionalLoop:
    def __init__(
        self,
        settings: Settings,
        serde: Serde,
        processor: Processor,
        *,
        group_id: str,
        topics: list[str],
        transactional_id: str,
        instance_id: str | None = None,
        dead_letter_topic: str = DEAD_LETTERS,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.serde = serde
        self.processor = processor
        self.group_id = group_id
        self.topics = topics
        self.transactional_id = transactional_id
        self.dead_letter_topic = dead_letter_topic
        self.before_commit = before_commit
        self._stop = threading.Event()
        self.consumer = Consumer(consumer_config(settings, group_id, instance_id))
        self.producer = self._new_producer()
        workers = max(1, processor.concurrency)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="handle") if workers > 1 else None
        self.committed_batches = 0
        self.last_progress = time.monotonic()
        self.aborted_batches = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> None:
        """Run until `stop()` or SIGTERM; finishes the batch in hand, then leaves cleanly."""
        with subscribed(
            self.consumer,
            self.topics,
            self._assigned,
            self._revoked,
            self._stop,
            lambda: self.last_progress,
            self.settings.stall_timeout_s,
        ):
            try:
                while not self._stop.is_set():
                    limit = self.processor.max_batch or self.settings.batch_max_messages
                    msgs = self.consumer.consume(limit, self.settings.poll_timeout_s)
                    self.process_batch(msgs)
                    self.last_progress = time.monotonic()
            finally:
                self.producer.flush(10)
                if self._pool is not None:
                    self._pool.shutdown()

    def _new_producer(self) -> Producer:
        producer = Producer(producer_config(self.settings, self.transactional_id))
        # Fences any older producer with this id and aborts its pending transaction.
        producer.init_transactions(60)
        return producer

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.processor.on_assign(partitions)
        # Recovery time after a restart is measured up to this line (tests/chaos): keep its wording.
        log.info(
            "assigned %d partitions: %s",
            len(partitions),
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions),
        )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.processor.on_revoke(partitions)

    # -- one batch --------------------------------------------------------------------------------
    def process_batch(self, msgs: list[Message]) -> bool:
        """Process and commit one batch. Returns False when it was aborted (and rewound)."""
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        outputs: list[_Encoded] = []
        works: list[Callable[[], Sequence[Output]]] = []
        good = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                raise_if_fatal(err)
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            first.setdefault(tp, msg.offset() or 0)
            last[tp] = msg.offset() or 0
            good.append(msg)
        handled = (
            self._pool.map(self._outputs_for, good)
            if self._pool and len(good) > 1
            else map(self._outputs_for, good)
        )
        for encoded, later in handled:
            outputs.extend(encoded)
            works.extend(later)
        outputs.extend(self._encoded(self.processor.tick(ev.now_ms())))
        if not last and not outputs:
            return True
        offsets = [TopicPartition(t, p, off + 1) for (t, p), off in last.items()]
        try:
            self.producer.begin_transaction()
            for out in outputs:
                self._produce(*out)
            if offsets:
                self._send_offsets(offsets)
            if self.before_commit is not None:
                self.before_commit()
            self._commit()
        except KafkaException as exc:
            self._recover(exc, first)
            return False
        except StuckTransaction as exc:
            log.error("%s: abandoning this producer for a new one under the same transactional id", exc)
            self.aborted_batches += 1
            self.producer = self._new_producer()  # fences the stuck one; its transaction is aborted
            self.processor.on_abort()
            self._rewind(first)
            return False
        self.committed_batches += 1
        self.processor.on_commit()
        if works:
            self._after_commit(works)
        return True

    def _after_commit(self, works: list[Callable[[], Sequence[Output]]]) -> None:
        """Run the batch's after-commit work and publish its outputs in one more transaction."""

        def run(work: Callable[[], Sequence[Output]]) -> Sequence[Output]:
            try:
                return work()
            except Exception:  # its result is lost; the waiting side's timeout retries it
                log.exception("after-commit work failed")
                return ()

        results = self._pool.map(run, works) if self._pool and len(works) > 1 else map(run, works)
        outputs = self._encoded([o for outs in results for o in outs])
        for attempt in range(1, 4):
            try:
                self.producer.begin_transaction()
                for out in outputs:
                    self._produce(*out)
                self._commit()
                return
            except KafkaException as exc:
                log.warning("publishing after-commit results failed (try %d of 3): %s", attempt, exc)
                self._reset_producer(exc.args[0])
        log.error("gave up publishing %d after-commit results; timeouts will retry their steps", len(outputs))

    def _outputs_for(self, msg: Message) -> tuple[list[_Encoded], list[Callable[[], Sequence[Output]]]]:
        """Decode and handle one message; whatever cannot be is turned into a dead letter."""
        topic = msg.topic() or ""
        raw = msg.value()
        try:
            if raw is None:
                raise Reject("message has no value (tombstone) on a topic that carries records", "invalid")
            value = self.serde.decode(topic, raw)
        except Reject as rej:
            return [self._dead(msg, rej.reason, rej.error_class)], []
        except Exception as exc:  # any decoding failure means the bytes are unusable here
            return [
                self._dead(msg, f"cannot decode as {self.serde.envelope(topic)}: {exc}", "undecodable")
            ], []
        key = msg.key()
        record = Record(
            topic,
            msg.partition() or 0,
            msg.offset() or 0,
            key.decode() if isinstance(key, bytes) else key,
            value,
            msg.timestamp()[1],
        )
        try:
            handled = self.processor.handle(record)
            outs = [h for h in handled if isinstance(h, Output)]
            return self._encoded(outs), [h.work for h in handled if isinstance(h, AfterCommit)]
        except Reject as rej:
            return [self._dead(msg, rej.reason, rej.error_class)], []
        except Exception as exc:
            # One bad message must not stop the loop: keep it, with the reason, for an operator.
            log.exception("processing %s:%s:%s failed", topic, msg.partition(), msg.offset())
            return [
                self._dead(msg, f"processing failed: {type(exc).__name__}: {exc}", "processing_error")
            ], []

    def _dead(self, msg: Message, reason: str, error_class: str) -> _Encoded:
        letter = dead_letter_for(msg, reason, error_class, self.group_id, history_of(msg.headers()))
        log.warning("dead letter %s: %s", letter.dead_letter_id, reason)
        return (
            self.dead_letter_topic,
            letter.dead_letter_id,
            self.serde.encode(self.dead_letter_topic, letter),
            [],
            None,
        )

    def _encoded(self, outs: Sequence[Output]) -> list[_Encoded]:
        return [
            (
                o.topic,
                o.key,
                o.value
                if o.value is None or isinstance(o.value, bytes)
                else self.serde.encode(o.topic, o.value),
                o.headers,
                o.partition,
            )
            for o in outs
        ]

    def _produce(
        self,
        topic: str,
        key: str | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        # librdkafka's "unassigned" partition lets the partitioner choose.
        pinned = -1 if partition is None else partition
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=list(headers) or None, partition=pinned
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain

    def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        """send_offsets_to_transaction with a deadline of our own: librdkafka's can block far past its
        timeout when the group coordinator went away (librdkafka #5456, #5511)."""
        producer, metadata = self.producer, self.consumer.consumer_group_metadata()
        timeout = self.settings.txn_timeout_s
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, timeout)
                outcome.append(None)
            except BaseException as exc:  # handed to the loop's thread below
                outcome.append(exc)

        worker = threading.Thread(target=call, name="send-offsets", daemon=True)
        worker.start()
        worker.join(timeout + 5)
        if not outcome:
            raise StuckTransaction(f"send_offsets_to_transaction still blocked after {timeout + 5:.0f}s")
        if outcome[0] is not None:
            raise outcome[0]

    def _commit(self) -> None:
        for _ in range(5):
            try:
                self.producer.commit_transaction(self.settings.txn_timeout_s)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                log.warning("commit_transaction retriable error, retrying: %s", exc)
        self.producer.commit_transaction(self.settings.txn_timeout_s)

    def _recover(self, exc: KafkaException, first: dict[tuple[str, int], int]) -> None:
        self.aborted_batches += 1
        log.warning("transaction failed (%s): aborting and rewinding", exc)
        self._reset_producer(exc.args[0])
        self.processor.on_abort()
        self._rewind(first)

    def _rewind(self, first: dict[tuple[str, int], int]) -> None:
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as seek_exc:  # partition revoked meanwhile: its new owner resumes it
                log.info("not rewinding %s[%d]: %s", topic, partition, seek_exc)

    def _reset_producer(self, err: KafkaError) -> None:
        """Abort the open transaction, or rebuild a fenced or fatally failed producer."""
        if err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
            log.error("producer is fenced or failed fatally (%s): rebuilding it", err)
            self.producer = self._new_producer()
            return
        try:
            self.producer.abort_transaction(self.settings.txn_timeout_s)
        except KafkaException as abort_exc:
            log.error("abort failed (%s): rebuilding the producer", abort_exc)
            self.producer = self._new_producer()
