"""A member fenced out of its group cannot commit timer outputs built from stale state.

Timer-only transactions used to send no offsets, so the broker never checked the group generation:
a paused instance whose partitions had moved to another member could still commit what its timers
produced. Every transaction now carries the consumer's group metadata.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, TopicPartition
from echo import Echo
from helpers import read_topic, unique, wait_for
from test_txloop import committed_offset, produce_requests, request, serde_for
from test_txloop import topics as topics  # the fixture

from keel.producer import consumer_config
from keel.settings import Settings
from keel.txloop import Output, Record, TransactionalLoop

pytestmark = pytest.mark.integration


class PausedTimer(Echo):
    """Echo whose tick, once armed, stalls (a GC pause, a stuck host) and then fires a timer."""

    def __init__(self, out_topic: str) -> None:
        super().__init__(out_topic)
        self.armed, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

    def tick(self, now_ms: int) -> Sequence[Output]:
        if not self.armed.is_set():
            return ()
        self.armed.clear()
        self.entered.set()
        self.release.wait(60)
        out = Echo.handle(self, Record("in", 0, 0, "zombie-timer", request("zombie-timer"), 0))
        return [o for o in out if isinstance(o, Output)]


class Successor(Echo):
    def __init__(self, out_topic: str) -> None:
        super().__init__(out_topic)
        self.assigned = threading.Event()

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.assigned.set()


def _loop(settings: Settings, topics: tuple[str, ...], processor: Echo, txid: str) -> TransactionalLoop:
    in_t, out_t, dlq, group, _ = topics
    return TransactionalLoop(
        settings,
        serde_for(settings, in_t, out_t, dlq),
        processor,
        group_id=group,
        topics=[in_t],
        transactional_id=txid,
        dead_letter_topic=dlq,
    )


def test_a_member_fenced_out_of_the_group_cannot_commit_timer_outputs(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    paused = PausedTimer(out_t)
    zombie = _loop(stack, topics, paused, unique("txid"))
    zombie.consumer.close()  # a short poll interval, so that a stalled member leaves the group soon
    zombie.consumer = Consumer(consumer_config(stack, group, None, **{"max.poll.interval.ms": 7000}))
    taking_over = Successor(out_t)
    successor = _loop(stack, topics, taking_over, unique("txid"))
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in (zombie, successor)]
    threads[0].start()
    try:
        produce_requests(stack, serde, in_t, [unique("run")])
        wait_for(lambda: committed_offset(stack, group, in_t) == 1, what="the first member to commit")

        paused.armed.set()
        wait_for(paused.entered.is_set, what="the first member to stall in its tick")
        threads[1].start()  # its partitions move to the successor once the stalled member is out
        wait_for(taking_over.assigned.is_set, timeout=40, what="the take-over")
        produce_requests(stack, serde, in_t, [unique("run")])
        wait_for(lambda: committed_offset(stack, group, in_t) == 2, what="the successor to commit")

        before = (zombie.committed_batches, zombie.aborted_batches)
        paused.release.set()  # the zombie wakes up and tries to commit its timer's output
        wait_for(
            lambda: (zombie.committed_batches, zombie.aborted_batches) != before,
            timeout=40,
            what="the zombie's turn to end",
        )
    finally:
        paused.release.set()
        for loop in (zombie, successor):
            loop.stop()
        for t in threads:
            t.join(30)
    keys = [m.key() for m in read_topic(stack, out_t)]
    assert b"zombie-timer" not in keys, "a member fenced out of the group committed timer output"
    assert len(keys) == 2
