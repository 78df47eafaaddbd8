"""A run is owned on one partition only: the one Kafka's default partitioner gives its run_id.

The run's events and commands are keyed by run_id, so they land there. A run request published with
another key (a request id, a tenant, no key) lands elsewhere: it is re-routed, in the batch's
transaction, onto the run's partition and nothing else is done with it. A copy of a run's state found
on another partition's changelog (written before this rule) is dropped at restore and tombstoned (see
services.scheduler.runstore), so a stale copy can never revive an ended run.
"""

from __future__ import annotations

from functools import lru_cache

from keel.partitioner import partition_for
from keel.txloop import Output, Record

# Where a re-routed message was first published: topic:partition:offset.
REROUTED_FROM = "keel-rerouted-from"


@lru_cache(maxsize=1 << 16)
def owner_partition(run_id: str, partitions: int) -> int:
    # Pure, and asked for every message, state lookup and due timer: murmur2 in Python was a fifth of
    # the scheduler's CPU flat out. The cache holds the runs in flight and then some.
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
