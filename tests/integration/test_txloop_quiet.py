"""Batches that publish nothing cost no transaction: their offsets ride with the next one, or go on their
own once `offsets_max_delay_s` has passed, and on a clean stop."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from echo import Echo, make_loop
from helpers import read_topic, unique, wait_for
from test_txloop import committed_offset, produce_requests, serde_for
from test_txloop import topics as topics  # the fixture

from keel.settings import Settings
from keel.txloop import Output, Record, TransactionalLoop

pytestmark = pytest.mark.integration


class QuietEcho(Echo):
    """Echo that publishes nothing for runs whose id starts with `quiet` (as the ledger does for every
    run event but a tool result), and counts what it handled."""

    def __init__(self, out_topic: str) -> None:
        super().__init__(out_topic)
        self.handled = 0

    def handle(self, record: Record) -> Sequence[Output]:
        self.handled += 1
        return [] if record.value.run_id.startswith("quiet") else Echo.handle(self, record)


def _started(
    settings: Settings, topics: tuple[str, ...], delay_s: float
) -> tuple[TransactionalLoop, QuietEcho]:
    in_t, out_t, dlq, group, txid = topics
    loop = make_loop(
        settings.model_copy(update={"offsets_max_delay_s": delay_s}), in_t, out_t, dlq, group, txid
    )
    quiet = QuietEcho(out_t)
    loop.processor = loop.messages.processor = quiet
    threading.Thread(target=loop.run, daemon=True).start()
    return loop, quiet


def test_output_less_batches_commit_with_the_next_transaction(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    loop, quiet = _started(stack, topics, delay_s=60)
    try:
        produce_requests(stack, serde, in_t, [unique("quiet") for _ in range(3)])
        wait_for(lambda: quiet.handled == 3, what="the quiet messages to be handled")
        assert loop.committed_batches == 0, "a batch that published nothing cost a transaction"
        assert committed_offset(stack, group, in_t) < 0
        produce_requests(stack, serde, in_t, [unique("run")])
        wait_for(lambda: committed_offset(stack, group, in_t) == 4, what="the next transaction's offsets")
        assert loop.committed_batches == 1
        assert len(read_topic(stack, out_t, expect=1)) == 1
    finally:
        loop.stop()


def test_held_back_offsets_are_committed_after_the_delay_and_on_stop(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    loop, quiet = _started(stack, topics, delay_s=0.5)
    produce_requests(stack, serde, in_t, [unique("quiet") for _ in range(2)])
    wait_for(lambda: committed_offset(stack, group, in_t) == 2, what="the held-back offsets, on their own")
    assert read_topic(stack, out_t) == []
    loop.stop()

    loop, quiet = _started(stack, topics, delay_s=60)
    produce_requests(stack, serde, in_t, [unique("quiet")])
    wait_for(lambda: quiet.handled == 1, what="the restarted loop to handle the new message only")
    assert committed_offset(stack, group, in_t) == 2
    loop.stop()  # a clean stop commits what it held back
    wait_for(lambda: committed_offset(stack, group, in_t) == 3, what="the offsets held back at the stop")
