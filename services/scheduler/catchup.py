"""Timers wait for the backlog (pure): a partition's timers fire only once its input has caught up.

After downtime or under lag, the results a deadline waits for may still be unread in the input: firing
the timer first would retry, quarantine or fail a step whose result is already on the log. So, per
partition number, the gate holds timers until the partition's inputs (run requests and run events) have
been read up to the end offset seen at assignment. From then on, timers and facts of a run are ordered
by the run's own log, as a running scheduler sees them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass
class _Input:
    end: int | None = None  # the end offset (last stable offset) seen at assignment; None: not known yet
    next: int | None = None  # the next offset this partition's consumer reads; None: nothing read yet


class CatchUpGate:
    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        self._held: dict[int, dict[str, _Input]] = {}

    def assign(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._held[p] = {t: _Input() for t in self.topics}

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._held.pop(p, None)

    def held(self, partition: int) -> bool:
        """True while `partition` is assigned and its inputs have not caught up yet."""
        return partition in self._held

    def held_partitions(self) -> list[int]:
        return sorted(self._held)

    def set_end(self, topic: str, partition: int, end: int) -> None:
        inp = self._input(topic, partition)
        if inp is not None:
            inp.end = end
            self._settle(topic, partition, inp)

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        inp = self._input(topic, partition)
        if inp is not None:
            inp.next = offset + 1
            self._settle(topic, partition, inp)

    def reached(self, topic: str, partition: int) -> None:
        """Nothing is left to read below the end seen at assignment (the offsets between are transaction
        markers or aborted records, which take offsets but are never delivered)."""
        inputs = self._held.get(partition)
        if inputs is not None:
            inputs.pop(topic, None)
            if not inputs:
                del self._held[partition]

    def waiting(self) -> list[tuple[str, int, int | None, int | None]]:
        """(topic, partition, end, next offset) of every input not caught up yet."""
        return [(t, p, i.end, i.next) for p, inputs in self._held.items() for t, i in inputs.items()]

    def _input(self, topic: str, partition: int) -> _Input | None:
        return self._held.get(partition, {}).get(topic)

    def _settle(self, topic: str, partition: int, inp: _Input) -> None:
        if inp.end is not None and inp.next is not None and inp.next >= inp.end:
            self.reached(topic, partition)
