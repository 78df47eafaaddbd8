"""Dead letters you can work with: list, inspect and redrive them to where they came from.

A redrive produces the original key, value and headers back to the source topic and partition, plus a
`keel-dlq-history` header. A letter kept by reference (`value_truncated`: only a prefix of a value too
large for the dead-letter topic) is redriven from the original, read back from its source offset and
checked against the letter's digest. If the message fails again, its new dead letter carries that
history. Which letters were redriven is recorded on the compacted `keel.dead-letter-status` topic, and
who redrove each one on the append-only `keel.audit` (keel.auditlog), in the transaction of the redrive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from keel import auditlog
from keel.contracts import DeadLetter
from keel.deadletter import digest
from keel.producer import client_config
from keel.reader import read_topic
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import DEAD_LETTER_STATUS, DEAD_LETTERS

HISTORY_HEADER = "keel-dlq-history"
REDRIVE_HEADER = "keel-redrive-of"


@dataclass(frozen=True)
class Entry:
    letter: DeadLetter
    status: dict[str, Any] | None  # None while it waits; {"status": "redriven", ...} once redriven

    def summary(self) -> dict[str, Any]:
        x = self.letter
        return {
            "dead_letter_id": x.dead_letter_id,
            "source_topic": x.source_topic,
            "source_partition": x.source_partition,
            "source_offset": x.source_offset,
            "error_class": x.error_class,
            "reason": x.reason,
            "failed_at": x.failed_at.isoformat(),
            "consumer_group": x.consumer_group,
            "redriven": self.status is not None,
            "redrives_before": len(x.history),
        }

    def detail(self) -> dict[str, Any]:
        x = self.letter
        return {
            **self.summary(),
            "history": list(x.history),
            "status": self.status,
            "key": _text(x.key),
            "value_bytes": x.value_size if x.value_truncated else len(x.value or b""),
            "value_truncated": x.value_truncated,
            "value_digest": x.value_digest,
            "value_preview": _text(x.value),
            "headers": {h.name: _text(h.value) for h in x.headers},
        }


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw[:512].decode("utf-8", errors="replace")


def history_of(headers: Any) -> list[str]:
    """The earlier failures of a redriven message, from its headers (a list of pairs or a dict)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    for name, value in pairs:
        if name == HISTORY_HEADER and value:
            try:
                return [str(x) for x in json.loads(value)]
            except (ValueError, TypeError):
                return [f"unreadable {HISTORY_HEADER} header"]
    return []


def entries(settings: Settings) -> list[Entry]:
    """Every dead letter with its redrive status, oldest first."""
    serde = Serde(registry_client(settings.schema_registry_url))
    status = {}
    for msg in read_topic(settings, DEAD_LETTER_STATUS):
        value = msg.value()
        status[(msg.key() or b"").decode()] = json.loads(value) if value else None
    # A dead letter always has a value; a tombstone on the topic would only be someone's cleanup.
    raw = [v for m in read_topic(settings, DEAD_LETTERS) if (v := m.value()) is not None]
    letters = [serde.decode(DEAD_LETTERS, v) for v in raw]
    return [Entry(x, status.get(x.dead_letter_id)) for x in letters]


def waiting(all_entries: list[Entry]) -> list[Entry]:
    """The dead letters not redriven yet."""
    return [e for e in all_entries if e.status is None]


def find(all_entries: list[Entry], dead_letter_id: str) -> Entry | None:
    return next((e for e in all_entries if e.letter.dead_letter_id == dead_letter_id), None)


def redrive(
    settings: Settings,
    letter: DeadLetter,
    by: str,
    replaces: dict[str, Any] | None = None,
    serde: Serde | None = None,
) -> dict[str, Any]:
    """Send the original message back to its source partition; record the redrive (its status, and its
    audit record naming `by`), all in one Kafka transaction. `replaces`: the status of an earlier redrive
    of the letter (a forced one). `serde`: one for many redrives (a registry client each otherwise).
    Returns the status."""
    history = [*letter.history, f"{letter.dead_letter_id} ({letter.error_class}): {letter.reason}"]
    headers = [(h.name, h.value) for h in letter.headers if h.name not in (HISTORY_HEADER, REDRIVE_HEADER)]
    headers += [
        (HISTORY_HEADER, json.dumps(history).encode()),
        (REDRIVE_HEADER, letter.dead_letter_id.encode()),
    ]
    value = original_value(settings, letter) if letter.value_truncated else letter.value
    serde = serde or Serde(registry_client(settings.schema_registry_url))
    tenant, run = named_in(serde, letter.source_topic, value)
    with auditlog.action(settings, serde) as act:
        try:
            msg = act.send(
                letter.source_topic,
                value,
                key=letter.key,
                headers=headers,
                partition=letter.source_partition,
            )
        except KafkaException as exc:
            if exc.args[0].code() in _NOT_PERMITTED:
                raise RedriveRefused(
                    f"this principal may not write {letter.source_topic} (the broker's ACLs): redrive "
                    f"{letter.dead_letter_id} with the operator tooling, `keel dlq redrive`"
                ) from None
            raise RuntimeError(f"redrive of {letter.dead_letter_id} was not acknowledged: {exc}") from exc
        status = {
            "status": "redriven",
            "by": by,
            "at": datetime.now(UTC).isoformat(),
            "to": f"{msg.topic()}:{msg.partition()}:{msg.offset()}",
        }
        act.send(DEAD_LETTER_STATUS, json.dumps(status).encode(), key=letter.dead_letter_id)
        detail = {"to": status["to"], "forced": replaces is not None, "replaced": (replaces or {}).get("to")}
        act.audit(
            auditlog.record(
                auditlog.DEAD_LETTER_REDRIVEN,
                by,
                letter.dead_letter_id,
                tenant_id=tenant,
                run_id=run,
                detail={k: v for k, v in detail.items() if v is not None},
            )
        )
    return status


def named_in(serde: Serde, topic: str, value: bytes | None) -> tuple[str | None, str | None]:
    """The tenant and the run a dead letter's message names, when it decodes as its topic's envelope
    and has them; (None, None) for bytes that do not (which is often why they are dead letters)."""
    try:
        decoded = serde.decode(topic, value or b"")
    except Exception:  # undecodable, no envelope for the topic, its schema unknown: nothing known
        return None, None
    tenant, run = getattr(decoded, "tenant_id", None), getattr(decoded, "run_id", None)
    return (tenant if isinstance(tenant, str) else None), (run if isinstance(run, str) else None)


_NOT_PERMITTED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)


class RedriveRefused(RuntimeError):
    """The broker refused the redrive: this process's principal may not write the source topic."""


class OriginalGone(RuntimeError):
    """The original of a letter kept by reference is no longer where the letter points (retention)."""


def original_value(settings: Settings, letter: DeadLetter, timeout_s: float = 15.0) -> bytes | None:
    """The whole value of a letter kept by reference, read from its source offset, digest checked."""
    where = f"{letter.source_topic}:{letter.source_partition}:{letter.source_offset}"
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"keel-dlq-{letter.dead_letter_id}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # The original may sit in a transaction that committed its dead letter: read what is committed.
            "isolation.level": "read_committed",
            "fetch.max.bytes": max(settings.record_limit(), 52_428_800),
        }
    )
    try:
        consumer.assign([TopicPartition(letter.source_topic, letter.source_partition, letter.source_offset)])
        msg = consumer.poll(timeout_s)
        eof = KafkaError._PARTITION_EOF
        while msg is not None and (err := msg.error()) is not None and err.code() != eof:
            msg = consumer.poll(timeout_s)  # transient errors: the message is still coming
    finally:
        consumer.close()
    if msg is None or msg.error() is not None or msg.offset() != letter.source_offset:
        raise OriginalGone(f"the original of {letter.dead_letter_id} is no longer at {where}")
    value = msg.value()
    if value is None or digest(value) != letter.value_digest:
        raise OriginalGone(f"the message at {where} does not match the digest of {letter.dead_letter_id}")
    return value
