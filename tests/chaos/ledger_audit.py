"""The ledger read two ways: its own (compacted) topic, and the non-compacted run-event log.

A compacted topic keeps only the last record per key, so a key committed twice could vanish from it
once the cleaner runs. Every ledger record is produced in the same transaction as the ledger's own
step_committed on keel.run-events (retention by time, never compacted), so counting those per key is a
duplicate check no cleaner can hide; and the ledger topic is read only while its cleaner cannot have
run (its active segment never rolled), which `ledger_topic_cannot_have_been_compacted` asserts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from keel.reader import read_topic
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import LEDGER, RUN_EVENTS


@dataclass
class LogCommits:
    keys: int
    duplicates: dict[str, int]


def ledger_commits_from_run_events(settings: Settings) -> LogCommits:
    """Keys the ledger committed, counted from its first-time step_committed facts on the run-event log."""
    serde = Serde(registry_client(settings.schema_registry_url))
    per_key: Counter[str] = Counter()
    for msg in read_topic(settings, RUN_EVENTS, timeout=120):
        event = serde.decode(RUN_EVENTS, msg.value())
        if event.event == "step_committed" and event.source == "ledger" and event.idempotency_key:
            if event.commit is None or not event.commit.duplicate:
                per_key[event.idempotency_key] += 1
    return LogCommits(len(per_key), {k: n for k, n in per_key.items() if n > 1})


def ledger_topic_cannot_have_been_compacted(settings: Settings) -> str | None:
    """None when the log cleaner cannot have touched keel.ledger yet (it never cleans the active
    segment, and no segment rolled); else why it could have."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    resource = ConfigResource("topic", LEDGER)
    config = admin.describe_configs([resource])[resource].result(30)
    segment_ms = int(config["segment.ms"].value)
    segment_bytes = int(config["segment.bytes"].value)
    size = sum(len(m.value() or b"") + len(m.key() or b"") + 70 for m in read_topic(settings, LEDGER))
    return compaction_possible(segment_ms, segment_bytes, size)


def compaction_possible(segment_ms: int, segment_bytes: int, size: int) -> str | None:
    """Why the cleaner could have run on a topic with these segment settings holding about `size` bytes
    (a segment rolled, by time within a test's span or by size), or None."""
    if segment_ms < 3_600_000:
        return f"segment.ms is {segment_ms}: a segment may have rolled and been cleaned"
    if size >= segment_bytes:
        return f"about {size} bytes of records against segment.bytes {segment_bytes}: a segment rolled"
    return None
