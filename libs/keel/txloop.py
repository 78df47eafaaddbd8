"""The transactional consume -> process -> produce loop every exactly-once service runs in.

One Kafka transaction per poll batch: the outputs, the dead letters and the consumed offsets commit
together or not at all. Every way a turn ends:

- nothing to publish (no outputs, no after-commit work): no transaction; the batch's offsets go with
  the next one, or on their own once `offsets_max_delay_s` has passed (and on a clean stop). A
  processor stages state only together with an output (a changelog write), so such a batch changed
  nothing, and reading it again after a crash changes nothing either.
- committed: outputs, dead letters and offsets are durable, then `on_commit`. Timer-only turns send the
  consumer's positions too, so every transaction carries the group's metadata and a member fenced out
  of the group cannot commit state built from stale data.
- abortable Kafka error: abort, `on_abort`, rewind to the batch's first offsets; the batch repeats.
- the broker rejects records (too large for a topic, invalid): as above, and after N such tries in a
  row the batch is halved; a single message still rejected is dead-lettered by reference
  (keel.splitting), so one output can never hold the loop forever.
- fenced or fatal producer: rebuilt under the same transactional id, then as an abort.
- a transactional call stuck past its deadline: the producer is abandoned for a new one, as an abort.
- the schema registry cannot be reached (or answers 5xx): nothing is dead-lettered; the turn is
  rewound and retried after a growing pause (keel.registryerrors).
- the processor's tick raises: logged and counted, the turn is rewound, the batch commits without a
  tick next turn and ticks resume after a growing pause. The loop never dies of a tick.
- a message that cannot decode (bad magic byte, truncated Avro, a schema id the registry does not
  know) or that its handler rejects or fails on: a dead letter in the same transaction, whole, or by
  reference when it would not fit on the bus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

import keel.events as ev
from keel.batchobs import BatchObserver
from keel.lag import LagSampler
from keel.looplife import raise_if_fatal, subscribed
from keel.metricsserver import MetricsSettings
from keel.producer import consumer_config, producer_config
from keel.registryerrors import RegistryUnavailable, registry_unavailable
from keel.serde import Serde
from keel.settings import Settings
from keel.splitting import Coord, Splitter, is_rejection
from keel.topics import DEAD_LETTERS
from keel.txcalls import StuckTransaction, commit, positions, send_offsets
from keel.txmessages import Encoded, MessageHandler
from keel.txtypes import AfterCommit, Handled, Output, Processor, Record, Reject

__all__ = [
    "AfterCommit",
    "Handled",
    "Output",
    "Processor",
    "Record",
    "Reject",
    "StuckTransaction",
    "TransactionalLoop",
]

log = logging.getLogger(__name__)
_MAX_PAUSE_S = 30.0


def _due(deferred: dict[tuple[str, int], tuple[int, float]], now: float, max_delay_s: float) -> bool:
    """Whether offsets held back from output-less batches have waited long enough to be committed on
    their own, so a restart re-reads at most that long of messages (which change nothing again)."""
    oldest = min((t for _, t in deferred.values()), default=None)
    return oldest is not None and now - oldest >= max_delay_s


class _TickFailed(Exception):
    """The processor's tick raised: the turn is rewound and ticks pause."""


def _pause(streak: int) -> float:
    return min(_MAX_PAUSE_S, 0.5 * 2.0 ** min(streak, 8))


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
        service: str | None = None,
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
        self.splitter = Splitter(settings.split_after_aborts)
        # Metrics and event logs of what commits (keel.batchobs), named by service (default: the group).
        self.observer = BatchObserver(service or group_id.removeprefix("keel-"))
        self.lag = LagSampler(self.consumer, group_id, MetricsSettings().lag_interval_s)
        self.messages = MessageHandler(
            serde,
            processor,
            group_id,
            dead_letter_topic,
            settings.max_message_bytes,
            self.splitter.poisoned,
            self.observer,
        )
        self.committed_batches = 0
        self.last_progress = time.monotonic()
        self.aborted_batches = 0
        self.tick_failures = 0  # ticks that raised (or whose outputs the broker rejected)
        self.registry_waits = 0  # turns rewound because the schema registry could not answer
        self._tick_streak = 0
        self._ticks_paused_until = 0.0
        self._registry_streak = 0
        self._delivery_errors: list[KafkaError] = []
        # (topic, partition) -> (next offset to commit, when the oldest uncommitted message was read)
        self._deferred: dict[tuple[str, int], tuple[int, float]] = {}

    @property
    def split_batches(self) -> int:
        return self.splitter.splits

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
                    limit = self.splitter.limit(self._batch_limit())
                    self.process_batch(self._next_batch(limit))
                    self.last_progress = time.monotonic()
                    self.lag.maybe_sample()
                self._commit_deferred()
            finally:
                self.producer.flush(10)
                if self._pool is not None:
                    self._pool.shutdown()

    def _commit_deferred(self) -> None:
        """On a clean stop, commit the offsets held back from output-less batches (else the next owner
        would only read those messages again, to no effect)."""
        if self._deferred:
            self._deferred = {tp: (off, 0.0) for tp, (off, _) in self._deferred.items()}
            self.process_batch([])

    def _next_batch(self, limit: int) -> list[Message]:
        """Block for the first message only, then take what is already fetched. (`consume(n, timeout)`
        waits the whole timeout unless n messages arrive: at low load every hop would idle that long.)"""
        first = self.consumer.poll(self.processor.max_wait_s(self.settings.poll_timeout_s))
        if first is None:
            return []
        return [first, *self.consumer.consume(limit - 1, 0)] if limit > 1 else [first]

    def _batch_limit(self) -> int:
        return self.processor.max_batch or self.settings.batch_max_messages

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
        # Held-back offsets of revoked partitions are not ours to commit: the new owner re-reads those
        # messages, which changed nothing here.
        for tp in partitions:
            self._deferred.pop((tp.topic, tp.partition), None)
        self.processor.on_revoke(partitions)
        self.splitter.forget({(tp.topic, tp.partition) for tp in partitions})

    # -- one batch --------------------------------------------------------------------------------
    def process_batch(self, msgs: list[Message]) -> bool:
        """Process and commit one batch. Returns False when it was aborted (and rewound)."""
        self.observer.dropped()  # whatever a failed turn staged: that turn is being repeated now
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
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
        coords: list[Coord] = [(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in good]
        try:
            outputs, works = self._handle_all(good)
            ticked = self._tick()
        except RegistryUnavailable as exc:
            self.processor.on_abort()
            self._rewind(first)
            self._wait_for_registry(exc, len(good))
            return False
        except _TickFailed:
            self.processor.on_abort()
            self._rewind(first)
            return False
        self._registry_streak = 0
        outputs += ticked
        now = time.monotonic()
        deferred = {
            **self._deferred,
            **{tp: (off + 1, self._deferred.get(tp, (0, now))[1]) for tp, off in last.items()},
        }
        if not outputs and not works and not _due(deferred, now, self.settings.offsets_max_delay_s):
            # Nothing to publish and, by the processor contract, no state staged (state only changes
            # with an output): the offsets ride with the next transaction instead of costing one now.
            # (Kept apart from self._deferred until then, so a failed turn never commits past a rewind.)
            self._deferred = deferred
            return True
        offsets = [TopicPartition(t, p, off) for (t, p), (off, _) in deferred.items()]
        if not offsets:
            try:  # timer-only: carry the group's metadata all the same
                offsets = positions(self.consumer)
            except KafkaException as exc:
                log.warning("cannot read the consumer's positions (%s): timer outputs wait a turn", exc)
                self.processor.on_abort()
                return False
        self._delivery_errors = []
        try:
            self.producer.begin_transaction()
            for out in outputs:
                self._produce(*out)
            if offsets:
                send_offsets(self.producer, self.consumer, offsets, self.settings.txn_timeout_s)
            if self.before_commit is not None:
                self.before_commit()
            commit(self.producer, self.settings.txn_timeout_s)
        except KafkaException as exc:
            self._recover(exc, first, coords, bool(ticked))
            return False
        except StuckTransaction as exc:
            log.error("%s: abandoning this producer for a new one under the same transactional id", exc)
            self.aborted_batches += 1
            self.observer.aborted()
            self.producer = self._new_producer()  # fences the stuck one; its transaction is aborted
            self.processor.on_abort()
            self._rewind(first)
            return False
        self.committed_batches += 1
        self.observer.committed()
        self._deferred.clear()
        self.splitter.committed(coords, self._batch_limit())
        if ticked:
            self._tick_streak = 0
        self.processor.on_commit()
        if works:
            self._after_commit(works)
        return True

    def _handle_all(self, good: list[Message]) -> tuple[list[Encoded], list[Callable[[], Sequence[Output]]]]:
        if self._pool and len(good) > 1:
            futures = [self._pool.submit(self.messages.outputs_for, m) for m in good]
            # Every handler has finished before one's error aborts the turn: none stages state after
            # the on_abort that follows.
            wait(futures)
            handled = [f.result() for f in futures]
        else:
            handled = [self.messages.outputs_for(m) for m in good]
        outputs: list[Encoded] = []
        works: list[Callable[[], Sequence[Output]]] = []
        for encoded, later in handled:
            outputs.extend(encoded)
            works.extend(later)
        return outputs, works

    def _tick(self) -> list[Encoded]:
        """The processor's timer outputs, encoded; a tick that raises pauses ticks (never the loop)."""
        if time.monotonic() < self._ticks_paused_until:
            return []
        try:
            return self.messages.encoded(self.processor.tick(ev.now_ms()))
        except Exception as exc:
            if registry_unavailable(exc):
                raise RegistryUnavailable(str(exc)) from exc
            log.exception("tick failed: the turn is rewound and its batch commits without a tick")
            self._pause_ticks()
            raise _TickFailed from exc

    def _pause_ticks(self) -> None:
        self.tick_failures += 1
        self._tick_streak += 1
        pause = _pause(self._tick_streak - 1)
        self._ticks_paused_until = time.monotonic() + pause
        log.error(
            "tick failures: %d (%d in a row); next tick in %.1fs",
            self.tick_failures,
            self._tick_streak,
            pause,
        )

    def _wait_for_registry(self, exc: RegistryUnavailable, rewound: int) -> None:
        self.registry_waits += 1
        self._registry_streak += 1
        pause = _pause(self._registry_streak)
        log.warning(
            "schema registry unavailable (%s): %d messages rewound, none dead-lettered; retrying in %.1fs",
            exc,
            rewound,
            pause,
        )
        self._stop.wait(pause)

    def _after_commit(self, works: list[Callable[[], Sequence[Output]]]) -> None:
        """Run the batch's after-commit work and publish its outputs in one more transaction."""

        def run(work: Callable[[], Sequence[Output]]) -> Sequence[Output]:
            try:
                return work()
            except Exception:  # its result is lost; the waiting side's timeout retries it
                log.exception("after-commit work failed")
                return ()

        results = self._pool.map(run, works) if self._pool and len(works) > 1 else map(run, works)
        try:
            outputs = self.messages.encoded([o for outs in results for o in outs])
        except Exception:  # e.g. the registry is away: lost like a crash here; timeouts retry the steps
            log.exception("encoding after-commit results failed; timeouts will retry their steps")
            return
        for attempt in range(1, 4):
            try:
                self.producer.begin_transaction()
                for out in outputs:
                    self._produce(*out)
                commit(self.producer, self.settings.txn_timeout_s)
                self.observer.committed()
                return
            except KafkaException as exc:
                log.warning("publishing after-commit results failed (try %d of 3): %s", attempt, exc)
                self.observer.metrics.aborts.labels(self.observer.service).inc()
                self._reset_producer(exc.args[0])
        self.observer.dropped()
        log.error("gave up publishing %d after-commit results; timeouts will retry their steps", len(outputs))

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
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers) or None,
                    partition=pinned,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err)

    def _recover(
        self, exc: KafkaException, first: dict[tuple[str, int], int], coords: list[Coord], ticked: bool
    ) -> None:
        self.aborted_batches += 1
        self.observer.aborted()
        err: KafkaError = exc.args[0]
        self.producer.poll(0)  # serve the delivery reports that say which records were refused
        rejection = next((e for e in [err, *self._delivery_errors] if is_rejection(e)), None)
        log.warning("transaction failed (%s): aborting and rewinding", exc)
        self._reset_producer(err)
        self.processor.on_abort()
        self._rewind(first)
        if rejection is None:
            return
        if ticked:
            # Timer outputs were in the turn: try the batch without them before blaming a message.
            log.error(
                "the broker rejected records of a turn with timer outputs (%s): pausing ticks", rejection
            )
            self._pause_ticks()
            return
        tries = self.splitter.streak + 1
        self.splitter.rejected(
            coords,
            f"the broker rejected this message's outputs {tries} times in a row ({rejection.str()}); "
            "dead-lettered by reference, its outputs dropped",
        )
        log.error(
            "the broker rejected records of a batch of %d (%s), %d times in a row; next batch at most %d",
            len(coords),
            rejection.str(),
            tries,
            self.splitter.limit(self._batch_limit()),
        )

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
