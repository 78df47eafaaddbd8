"""A run is owned on one partition only: the one Kafka's default partitioner gives its run_id.

The run's events and commands are keyed by run_id, so they land there. A run request published with
another key (a request id, a tenant, no key) lands elsewhere: it is re-routed, in the batch's
transaction, onto the run's partition and nothing else is done with it. A copy of a run's state found
on another partition's changelog (written before this rule) is dropped at restore and tombstoned, so a
stale copy can never revive an ended run.
"""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

from keel.partitioner import partition_for
from keel.statestore import ChangelogState
from keel.txloop import Output, Record

V = TypeVar("V")
log = logging.getLogger(__name__)
# Where a re-routed message was first published: topic:partition:offset.
REROUTED_FROM = "keel-rerouted-from"


def owner_partition(run_id: str, partitions: int) -> int:
    return partition_for(run_id, partitions)


def reroute(record: Record, run_id: str, partitions: int) -> Output:
    """The same message, keyed by its run_id, onto the run's own partition of the same topic."""
    origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
    return Output(
        record.topic,
        run_id,
        record.value,
        headers=[(REROUTED_FROM, origin)],
        partition=owner_partition(run_id, partitions),
    )


class OwnedRestore(Generic[V]):
    """Restores changelog partitions one at a time, keeping only entries on their run's own partition.

    One at a time, because the store is keyed by run_id alone: a foreign copy loaded after the owner's
    would otherwise replace it in memory.
    """

    def __init__(self, states: ChangelogState[V], partitions: int) -> None:
        self.states, self.partitions = states, partitions

    def load(self, new: set[int]) -> list[Output]:
        """Load `new` partitions; returns the tombstones of the foreign copies found (to produce)."""
        tombstones: list[Output] = []
        for p in sorted(new - self.states.partitions):
            before = {k: (part, v) for k, part, v in self.states.items()}
            self.states.load({p})
            foreign = [
                k
                for k, part, _ in self.states.items()
                if part == p and owner_partition(k, self.partitions) != p
            ]
            for key in foreign:
                tombstones.append(self.states.delete(key, p))
                self.states.commit()
                if key in before:  # the owner's copy, loaded earlier, comes back
                    self.states.put(key, before[key][1], before[key][0])
                    self.states.commit()
            if foreign:
                log.warning(
                    "dropped %d run states found on partition %d that belong to other partitions "
                    "(a run is owned only on its run_id's partition): %s",
                    len(foreign),
                    p,
                    ", ".join(foreign[:10]),
                )
        return tombstones
