"""Dead letters: a message that could not be processed, kept with its bytes, origin and reason.

A dead letter must itself fit on the bus: when the original would not (or when its outputs were what
the broker rejected), the letter keeps a prefix of the value, its size and digest, and points at the
original, which stays in its topic for a redrive to read.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from confluent_kafka import Message

from keel.contracts import DeadLetter, DeadLetterHeader

PREFIX_BYTES = 1024  # what a letter by reference keeps of the value, for an operator to look at
_ENVELOPE_BYTES = 1024  # room for the letter's own fields beside key, value, headers and reason


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    # FROZEN FORMAT: the id is derived from the source coordinates so that re-processing the same
    # message after a crash yields the same dead letter id. Never change it.
    return f"{topic}:{partition}:{offset}"


def digest(value: bytes) -> str:
    return "sha256:" + hashlib.sha256(value).hexdigest()


def _headers(msg: Message) -> list[tuple[str, object]]:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else [(str(h[0]), h[1]) for h in raw]


def dead_letter_for(
    msg: Message,
    reason: str,
    error_class: str,
    group: str | None,
    history: list[str] | None = None,
    *,
    max_bytes: int | None = None,
    by_reference: bool = False,
) -> DeadLetter:
    """The dead letter of `msg`. It holds the whole value unless `by_reference` or the letter would pass
    `max_bytes`; then only a prefix, with the size and digest of the original."""
    topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
    headers = [
        DeadLetterHeader(name=name, value=v if isinstance(v, bytes) or v is None else str(v).encode())
        for name, v in _headers(msg)
    ]
    key = msg.key()
    key_b = key.encode() if isinstance(key, str) else key
    raw = msg.value()
    value = raw.encode() if isinstance(raw, str) else raw
    size = (
        len(value or b"")
        + len(key_b or b"")
        + sum(len(h.name) + len(h.value or b"") for h in headers)
        + len(reason.encode())
        + _ENVELOPE_BYTES
    )
    truncated = value is not None and (by_reference or (max_bytes is not None and size > max_bytes))
    return DeadLetter(
        dead_letter_id=dead_letter_id(topic, partition, offset),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        consumer_group=group,
        key=key_b,
        value=value[:PREFIX_BYTES] if truncated and value is not None else value,
        headers=headers,
        reason=reason,
        error_class=error_class,
        failed_at=datetime.now(UTC),
        history=list(history or []),
        value_size=len(value) if truncated and value is not None else None,
        value_digest=digest(value) if truncated and value is not None else None,
        value_truncated=truncated,
    )
