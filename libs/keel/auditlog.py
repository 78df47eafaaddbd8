"""The audit topic (keel.audit): someone's action that is neither a run fact nor a control command (a dead
letter redriven, a definition registered), recorded in the same Kafka transaction as the action itself,
so that neither is ever on the log without the other (docs/tenancy.md section 5).

The topics that hold those actions are compacted: a second redrive of one letter replaces the first's
status. keel.audit is append-only, so every action keeps its record and a rebuilt audit table equals the
live one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from keel.contracts import AuditRecord
from keel.producer import producer_config
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import AUDIT

DEAD_LETTER_REDRIVEN = "dead_letter_redriven"
REGISTERED = "_registered"  # after a definition's kind: workflow_registered, tool_registered
# One transactional id per action, never reused: two actions at once never fence each other, and the
# broker's ACLs grant this prefix to the principals that act (keel.acl).
TRANSACTIONAL_PREFIX = "keel-action-"
_TIMEOUT_S = 30.0


def record(
    action: str,
    actor: str,
    subject: str,
    *,
    tenant_id: str | None = None,
    run_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditRecord:
    return AuditRecord(
        record_id=uuid.uuid4().hex,
        at=datetime.now(UTC),
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        subject=subject,
        run_id=run_id,
        detail_json=json.dumps(detail, sort_keys=True, separators=(",", ":")) if detail else None,
    )


class Action:
    """An open transaction: the action's messages and its audit record, committed together or not at all."""

    def __init__(self, producer: Producer, serde: Serde) -> None:
        self.producer, self.serde = producer, serde

    def send(self, topic: str, value: bytes | None, **kw: Any) -> Message:
        """Produce one message and wait for the broker to take it (in the transaction: not yet visible to
        read_committed readers). Returns it, offset known; raises KafkaException with the broker's error."""
        answers: list[tuple[KafkaError | None, Message]] = []
        self.producer.produce(topic, value=value, on_delivery=lambda e, m: answers.append((e, m)), **kw)
        self.producer.flush(_TIMEOUT_S)
        if not answers:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{topic}: no answer from the broker"))
        err, msg = answers[0]
        if err is not None:
            raise KafkaException(err)
        return msg

    def audit(self, rec: AuditRecord) -> Message:
        return self.send(AUDIT, self.serde.encode(AUDIT, rec), key=rec.subject)


@contextmanager
def action(settings: Settings, serde: Serde | None = None) -> Iterator[Action]:
    """One transaction for one action: committed when the block ends, aborted when it raises."""
    producer = Producer(producer_config(settings, TRANSACTIONAL_PREFIX + uuid.uuid4().hex))
    producer.init_transactions(_TIMEOUT_S)
    producer.begin_transaction()
    try:
        yield Action(producer, serde or Serde(registry_client(settings.schema_registry_url)))
    except BaseException:
        try:
            producer.abort_transaction(_TIMEOUT_S)
        except KafkaException:
            pass  # a fatal producer: nothing of the transaction was committed, its timeout aborts it
        raise
    try:
        producer.commit_transaction(_TIMEOUT_S)
    except KafkaException as exc:
        if exc.args[0].txn_requires_abort():
            producer.abort_transaction(_TIMEOUT_S)
        raise
