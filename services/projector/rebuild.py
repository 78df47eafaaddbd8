"""Rebuilding projections from the topics: build a shadow schema from offset 0, then swap it in."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from keel.producer import client_config, consumer_config
from keel.serde import Serde, registry_client
from keel.settings import Settings
from services.projector.core import Projection
from services.projector.schema import DEFAULT_SCHEMA, create_schema, drop_schema, schema_exists, swap_schema
from services.projector.service import TOPICS, connect, envelopes_of, to_projection
from services.projector.store import TP, ProjectionStore

log = logging.getLogger(__name__)


def end_offsets(settings: Settings, topics: Sequence[str], timeout: float = 10.0) -> dict[TP, int]:
    """The high watermark of every partition of `topics`, now."""
    consumer = Consumer({**client_config(settings), "group.id": f"keel.ends-{uuid.uuid4()}"})
    try:
        ends = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
            if meta.error is not None:
                raise KafkaException(meta.error)
            for p in meta.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                ends[(topic, p)] = high
        return ends
    finally:
        consumer.close()


def build_into(
    settings: Settings,
    topics: Sequence[str],
    schema: str,
    until_offsets: Mapping[TP, int],
    *,
    serde: Serde | None = None,
    replace: bool = False,
    idle_timeout: float = 120.0,
) -> int:
    """Project `topics` from offset 0 up to `until_offsets` into a new schema; returns messages read.

    The schema's stored offsets end at `until_offsets`, so a projector pointed at it goes on from there."""
    serde = serde or Serde(registry_client(settings.schema_registry_url), envelopes_of(topics))
    with connect(settings) as conn:
        if schema_exists(conn, schema):
            if not replace:
                raise RuntimeError(f"schema {schema!r} exists; refusing to build into it")
            drop_schema(conn, schema)
        create_schema(conn, schema)
        store = ProjectionStore(conn, schema)
        pending = {tp: end for tp, end in until_offsets.items() if end > 0 and tp[0] in topics}
        positions: dict[TP, int | None] = dict.fromkeys(pending)
        group = f"keel.projector.build-{uuid.uuid4()}"
        consumer = Consumer(consumer_config(settings, group, None, **{"enable.partition.eof": True}))
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in pending])
        read, last_progress = 0, time.monotonic()
        try:
            while pending:
                batch: list[Projection] = []
                for msg in consumer.consume(settings.batch_max_messages, settings.poll_timeout_s):
                    tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
                    err = msg.error()
                    if err is not None:
                        # End of partition: with read_committed, past the last stable offset; open
                        # transactions below the mark are waited for, aborted ones never arrive.
                        if err.code() == KafkaError._PARTITION_EOF and offset >= pending.get(tp, 0):
                            pending.pop(tp, None)
                        elif err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer error: %s", err)
                        continue
                    if tp not in pending or offset >= pending[tp]:
                        pending.pop(tp, None)
                        continue
                    batch.append(to_projection(serde, msg))
                    if offset + 1 >= pending[tp]:
                        pending.pop(tp)
                if batch:
                    ends = {(p.at.topic, p.at.partition): p.at.offset + 1 for p in batch}
                    stored = store.write(batch, {tp: positions[tp] for tp in ends})
                    if stored != ends:
                        raise RuntimeError(f"someone else writes into schema {schema!r}")
                    positions.update(stored)
                    read, last_progress = read + len(batch), time.monotonic()
                elif time.monotonic() - last_progress > idle_timeout:
                    raise TimeoutError(
                        f"no progress for {idle_timeout:.0f}s; still reading {sorted(pending)}"
                    )
        finally:
            consumer.close()
        store.set_offsets({tp: end for tp, end in until_offsets.items() if end > 0 and tp[0] in topics})
    return read


def rebuild(
    settings: Settings,
    topics: Sequence[str] = TOPICS,
    schema: str = DEFAULT_SCHEMA,
    *,
    serde: Serde | None = None,
) -> dict[TP, int]:
    """Rebuild every projection of `topics` into `<schema>_rebuild`, then swap it in for `schema` in one
    transaction (offsets included). A running projector notices its offsets moved and follows."""
    until = end_offsets(settings, topics)
    shadow = f"{schema}_rebuild"
    count = build_into(settings, topics, shadow, until, serde=serde, replace=True)
    with connect(settings) as conn:
        swap_schema(conn, shadow, schema)
    log.info("rebuilt %s from %d messages up to %s", schema, count, until)
    return until
