"""The dashboard's consumer: keel.run-events -> the idempotent sink, at-least-once.

A read_committed consumer (events of aborted transactions never count) with Kafka commits made only
after the batch's figures are durable in Postgres. A crash between the two redelivers the batch; the
sink counts each event id once, so the redelivered copies add nothing. Undecodable values are logged
and counted, never fatal: one bad message must not stop a dashboard.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from keel.contracts import RunEvent
from keel.looplife import raise_if_fatal
from keel.producer import consumer_config
from keel.serde import Serde
from keel.settings import Settings
from services.dashboard import store
from services.dashboard.core import Tally, tally

log = logging.getLogger(__name__)


def to_tally(serde: Serde, msg: Message) -> Tally | None:
    """The message's tally, or None when its value is not a run event."""
    raw = msg.value()
    if raw is None:
        return None
    try:
        event = serde.decode(msg.topic() or "", raw)
    except Exception as exc:  # any decoding failure: this value cannot be read here
        log.warning("undecodable %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        return None
    if not isinstance(event, RunEvent):
        kind = type(event).__name__
        log.warning("%s[%s]@%s holds a %s, not a RunEvent", msg.topic(), msg.partition(), msg.offset(), kind)
        return None
    return tally(event)


class DashboardConsumer:
    def __init__(
        self,
        settings: Settings,
        serde: Serde,
        conn: psycopg.Connection[Any],
        topics: list[str],
        group: str,
        scope: str,
    ) -> None:
        self.settings, self.serde, self.conn = settings, serde, conn
        self.topics, self.group, self.scope = topics, group, scope
        self.batches = 0

    def run(self, stopped: threading.Event) -> None:
        """Consume until `stopped` is set; the batch in hand is finished (counted and committed) first."""
        consumer = Consumer(consumer_config(self.settings, self.group))
        consumer.subscribe(self.topics)
        log.info("consuming %s as group %s into scope %s", ", ".join(self.topics), self.group, self.scope)
        try:
            while not stopped.is_set():
                msgs = consumer.consume(self.settings.batch_max_messages, self.settings.poll_timeout_s)
                if msgs:
                    self.handle(consumer, msgs)
        finally:
            consumer.close()

    def handle(self, consumer: Consumer, msgs: list[Message]) -> None:
        tallies: list[Tally] = []
        undecodable = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                raise_if_fatal(err)
                continue
            t = to_tally(self.serde, msg)
            if t is None:
                undecodable += 1
            else:
                tallies.append(t)
        if not tallies and not undecodable:
            return
        # Durable first, then the offsets: a crash in between means redelivery, which the sink absorbs.
        store.apply(self.conn, self.scope, tallies, undecodable)
        self.batches += 1
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions: their new owner re-reads from the last commit, and the
            # sink skips what this batch already counted.
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed, the batch will be redelivered: %s", exc)
