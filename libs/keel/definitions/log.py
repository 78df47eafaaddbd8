"""The definitions topic: publish a record, read them all, and apply a definition (validate, publish,
read back, judge). Applies are safe to run concurrently: see `apply`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException

from keel import auditlog
from keel.contracts import DefinitionRecord
from keel.definitions.kinds import Parsed, check_references, known_in, parse, ref_of
from keel.definitions.problems import Lines, load_text
from keel.definitions.record import Candidate, Verdict, record_key, verdict, winners
from keel.reader import read_topic
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import DEFINITIONS


def serde_for(settings: Settings, topic: str) -> Serde:
    return Serde(registry_client(settings.schema_registry_url), {topic: "definition"})


def candidate(record: DefinitionRecord, offset: int) -> Candidate:
    at = int(record.applied_at.timestamp() * 1000)
    return Candidate(
        record.kind, record.name, record.version, record.digest, offset, record.content, record.applied_by, at
    )


def read_all(settings: Settings, topic: str = DEFINITIONS, serde: Serde | None = None) -> list[Candidate]:
    """Every record of the (one-partition) topic in log order, read_committed, to its end."""
    serde = serde or serde_for(settings, topic)
    return [
        candidate(serde.decode(topic, m.value() or b""), m.offset() or 0) for m in read_topic(settings, topic)
    ]


def publish(settings: Settings, parsed: Parsed, applied_by: str, topic: str = DEFINITIONS) -> int:
    """Publish one record, and its audit record naming `applied_by` in the same Kafka transaction
    (keel.auditlog); returns its offset once both are committed."""
    record = DefinitionRecord(
        kind=parsed.kind,
        name=parsed.name,
        version=parsed.version,
        content=parsed.content,
        digest=parsed.digest,
        applied_at=datetime.now(UTC),
        applied_by=applied_by,
    )
    value = serde_for(settings, topic).encode(topic, record)
    try:
        with auditlog.action(settings) as act:
            key = record_key(parsed.kind, parsed.name, parsed.version, parsed.digest)
            offset = act.send(topic, value, key=key, partition=0).offset() or 0
            detail = {"kind": parsed.kind, "digest": parsed.digest, "recorded": f"{topic}:0:{offset}"}
            subject = f"{parsed.name}@{parsed.version}"
            act.audit(auditlog.record(parsed.kind + auditlog.REGISTERED, applied_by, subject, detail=detail))
    except KafkaException as exc:
        raise RuntimeError(
            f"the definition {parsed.name}@{parsed.version} could not be published to {topic}: {exc}"
        ) from exc
    return offset


@dataclass(frozen=True)
class Applied:
    """The outcome of an apply: `created`, `unchanged` (nothing written) or `conflict` (refused)."""

    parsed: Parsed
    outcome: str
    winner: Candidate | None = None
    written: bool = False

    @property
    def accepted(self) -> bool:
        return self.outcome != "conflict"


def apply(
    settings: Settings,
    kind: str,
    data: Any,
    *,
    source: str,
    applied_by: str,
    lines: Lines | None = None,
    topic: str = DEFINITIONS,
) -> Applied:
    """Validate `data` as a definition of `kind` and register it. Raises DefinitionInvalid (nothing is
    written). Same content as the registered version: `unchanged`, nothing written. Other content under
    a registered version: `conflict`, nothing written. Else the record is published, the topic is read
    back to it, and the first record of that version in log order decides: a concurrent apply of other
    content that landed first makes this one a `conflict` (its record stays, losing, for every reader)."""
    parsed = parse(kind, data, source, lines)
    records = read_all(settings, topic)
    won = winners(records)
    check_references(
        parsed, known_in((c.kind, ref_of(c.name, c.version)) for c in won.values()), source, lines
    )
    held = won.get((parsed.kind, parsed.name, parsed.version))
    if held is not None:
        return Applied(parsed, "unchanged" if held.digest == parsed.digest else "conflict", held)
    offset = publish(settings, parsed, applied_by, topic)
    mine = Candidate(parsed.kind, parsed.name, parsed.version, parsed.digest, offset)
    after = read_back(settings, topic, offset)
    judged: Verdict = verdict([*after, mine] if all(c.offset != offset for c in after) else after, mine)
    return Applied(parsed, judged.outcome, judged.winner, written=True)


def read_back(settings: Settings, topic: str, offset: int) -> list[Candidate]:
    """The topic up to (at least) `offset`: the record just published is durable, so a read_committed
    read to the end includes it."""
    return [c for c in read_all(settings, topic) if c.offset <= offset]


def apply_text(
    settings: Settings, kind: str, text: str, *, source: str, applied_by: str, topic: str = DEFINITIONS
) -> Applied:
    """`apply` for YAML or JSON text: problems then carry their line as well as their path."""
    data, lines = load_text(text, source)
    return apply(settings, kind, data, source=source, applied_by=applied_by, lines=lines, topic=topic)
