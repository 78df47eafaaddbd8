"""One consumed message through the processor: decoded, handled, encoded, or turned into a dead letter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import Message

from keel.batchobs import BatchObserver
from keel.claimcheck import offload
from keel.deadletter import dead_letter_for
from keel.dlq import history_of
from keel.logjson import run_context
from keel.registryerrors import RegistryUnavailable, registry_unavailable
from keel.serde import Serde
from keel.splitting import Coord
from keel.txtypes import AfterCommit, Output, Processor, Record, Reject

log = logging.getLogger("keel.txloop")
# (topic, key, value bytes, headers, partition) ready to produce
Encoded = tuple[str, str | None, bytes | None, list[tuple[str, bytes]], int | None]
Work = Callable[[], Sequence[Output]]


class MessageHandler:
    def __init__(
        self,
        serde: Serde,
        processor: Processor,
        group_id: str,
        dead_letter_topic: str,
        max_bytes: int,
        poisoned: dict[Coord, str],
        observer: BatchObserver | None = None,
    ) -> None:
        self.serde, self.processor = serde, processor
        self.group_id, self.dead_letter_topic, self.max_bytes = group_id, dead_letter_topic, max_bytes
        self.poisoned = poisoned  # messages to settle by reference (keel.splitting), shared with the loop
        self.observer = observer  # sees what is encoded; counts it once the loop commits (keel.batchobs)

    def outputs_for(self, msg: Message) -> tuple[list[Encoded], list[Work]]:
        """Decode and handle one message; whatever can never be is turned into a dead letter. Raises
        RegistryUnavailable when the registry could not answer: that message is good, only early."""
        try:
            return self._handle_one(msg)
        except Exception as exc:
            if registry_unavailable(exc):
                raise RegistryUnavailable(str(exc)) from exc
            raise

    def _handle_one(self, msg: Message) -> tuple[list[Encoded], list[Work]]:
        topic = msg.topic() or ""
        raw = msg.value()
        rejected = self.poisoned.get((topic, msg.partition() or 0, msg.offset() or 0))
        if rejected is not None:
            return [self.dead(msg, rejected, "output_rejected", by_reference=True)], []
        try:
            if raw is None:
                raise Reject("message has no value (tombstone) on a topic that carries records", "invalid")
            value = self.serde.decode(topic, raw)
        except Reject as rej:
            return [self.dead(msg, rej.reason, rej.error_class)], []
        except Exception as exc:
            if registry_unavailable(exc):
                raise
            # Bad magic byte, truncated Avro, a schema id the registry answers 404 for: never decodable.
            return [
                self.dead(msg, f"cannot decode as {self.serde.envelope(topic)}: {exc}", "undecodable")
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
        with run_context(value):  # JSON log lines of this handling name its run
            return self._handled(msg, record)

    def _handled(self, msg: Message, record: Record) -> tuple[list[Encoded], list[Work]]:
        try:
            handled = self.processor.handle(record)
            outs = [h for h in handled if isinstance(h, Output)]
            return self.encoded(outs), [h.work for h in handled if isinstance(h, AfterCommit)]
        except Reject as rej:
            return [self.dead(msg, rej.reason, rej.error_class)], []
        except Exception as exc:
            if registry_unavailable(exc):
                raise
            # One bad message must not stop the loop: keep it, with the reason, for an operator.
            log.exception("processing %s:%s:%s failed", record.topic, msg.partition(), msg.offset())
            return [self.dead(msg, f"processing failed: {type(exc).__name__}: {exc}", "processing_error")], []

    def dead(self, msg: Message, reason: str, error_class: str, by_reference: bool = False) -> Encoded:
        letter = dead_letter_for(
            msg,
            reason,
            error_class,
            self.group_id,
            history_of(msg.headers()),
            max_bytes=self.max_bytes,
            by_reference=by_reference,
        )
        log.warning(
            "dead letter %s%s: %s",
            letter.dead_letter_id,
            " (by reference)" if letter.value_truncated else "",
            reason,
        )
        if self.observer is not None:
            self.observer.dead_letter(letter)
        return (
            self.dead_letter_topic,
            letter.dead_letter_id,
            self.serde.encode(self.dead_letter_topic, letter),
            [],
            None,
        )

    def encoded(self, outs: Sequence[Output]) -> list[Encoded]:
        encoded = [
            (
                o.topic,
                o.key,
                o.value
                if o.value is None or isinstance(o.value, bytes)
                # Payloads above the blob threshold leave the record for the blob store here.
                else self.serde.encode(o.topic, offload(o.value)),
                o.headers,
                o.partition,
            )
            for o in outs
        ]
        if self.observer is not None:
            self.observer.staged(outs)
        return encoded
