"""Batches whose outputs the broker keeps rejecting are halved until the one message behind it is found.

A rejection (record too large for its topic, invalid record) fails the whole transaction, so without
this the loop would abort and repeat the same batch forever. After `after` rejected tries in a row
the next batches are capped at half the size; a single message still rejected `after` times is settled
by reference (a dead letter pointing at the original) instead of with its outputs.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

Coord = tuple[str, int, int]  # topic, partition, offset

# Broker or client verdicts on the records themselves: retrying the same records cannot succeed.
REJECTIONS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def is_rejection(err: KafkaError | None) -> bool:
    return err is not None and err.code() in REJECTIONS


class Splitter:
    def __init__(self, after: int) -> None:
        self.after = max(1, after)
        self.streak = 0  # rejected tries in a row
        self.cap: int | None = None  # at most this many messages per batch while isolating
        self.poisoned: dict[Coord, str] = {}  # messages to settle by reference, with the reason
        self.splits = 0

    def limit(self, base: int) -> int:
        return base if self.cap is None else min(base, self.cap)

    def rejected(self, batch: list[Coord], reason: str) -> None:
        """The batch's transaction failed because the broker rejected some of its records."""
        self.streak += 1
        if self.streak < self.after or not batch:
            return  # an empty batch means timer outputs were rejected: the caller pauses ticks
        self.streak = 0
        if len(batch) > 1:
            self.cap = max(1, len(batch) // 2)
            self.splits += 1
        else:
            self.poisoned[batch[0]] = reason

    def committed(self, batch: list[Coord], base: int) -> None:
        self.streak = 0
        for coord in batch:
            self.poisoned.pop(coord, None)
        if self.cap is not None and not self.poisoned:
            self.cap = None if self.cap * 2 >= base else self.cap * 2

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions were revoked: their new owner finds its own way."""
        for coord in [c for c in self.poisoned if (c[0], c[1]) in partitions]:
            del self.poisoned[coord]  # in place: the message handler shares this dict
