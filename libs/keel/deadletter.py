"""Dead letters: a message that could not be processed, kept with its bytes, origin and reason."""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

from keel.contracts import DeadLetter, DeadLetterHeader


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    # FROZEN FORMAT: the id is derived from the source coordinates so that re-processing the same
    # message after a crash yields the same dead letter id. Never change it.
    return f"{topic}:{partition}:{offset}"


def _headers(msg: Message) -> list[tuple[str, object]]:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else [(str(h[0]), h[1]) for h in raw]


def dead_letter_for(
    msg: Message, reason: str, error_class: str, group: str | None, history: list[str] | None = None
) -> DeadLetter:
    topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
    headers = [
        DeadLetterHeader(name=name, value=v if isinstance(v, bytes) or v is None else str(v).encode())
        for name, v in _headers(msg)
    ]
    key = msg.key()
    value = msg.value()
    return DeadLetter(
        dead_letter_id=dead_letter_id(topic, partition, offset),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        consumer_group=group,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=headers,
        reason=reason,
        error_class=error_class,
        failed_at=datetime.now(UTC),
        history=list(history or []),
    )
