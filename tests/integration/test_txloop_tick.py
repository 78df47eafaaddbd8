"""A processor's tick that raises never kills the loop: it is logged and counted, messages go on."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from echo import Echo
from helpers import read_topic, unique, wait_for
from test_txloop import committed_offset, produce_requests, request, run_ids_of, serde_for
from test_txloop import topics as topics  # the fixture

from keel.contracts import RunEvent
from keel.settings import Settings
from keel.txloop import Output, TransactionalLoop

pytestmark = pytest.mark.integration


class BadTimers(Echo):
    """Echo whose tick raises its first `fails` times (a timer of a retired workflow), then fires once."""

    def __init__(self, out_topic: str, fails: int) -> None:
        super().__init__(out_topic)
        self.fails, self.calls, self.fired = fails, 0, False

    def tick(self, now_ms: int) -> Sequence[Output]:
        self.calls += 1
        if self.calls <= self.fails:
            raise LookupError("workflow outbound_email version 1 is retired")
        if self.fired:
            return ()
        self.fired = True
        event = Echo.handle(self, _record("timer-run"))[0]
        assert isinstance(event, Output) and isinstance(event.value, RunEvent)
        return [event]


def _record(run_id: str):
    from keel.txloop import Record

    return Record("in", 0, 0, run_id, request(run_id), 0)


def _loop(settings: Settings, topics: tuple[str, ...], processor: Echo) -> TransactionalLoop:
    in_t, out_t, dlq, group, txid = topics
    return TransactionalLoop(
        settings,
        serde_for(settings, in_t, out_t, dlq),
        processor,
        group_id=group,
        topics=[in_t],
        transactional_id=txid,
        dead_letter_topic=dlq,
    )


def test_a_tick_that_always_raises_does_not_stop_the_messages(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    loop = _loop(stack, topics, BadTimers(out_t, fails=10**9))
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    first, second = [unique("run") for _ in range(3)], [unique("run") for _ in range(3)]
    try:
        produce_requests(stack, serde, in_t, first)
        wait_for(
            lambda: committed_offset(stack, group, in_t) == 3 or not runner.is_alive(),
            timeout=30,
            what="the first messages",
        )
        assert runner.is_alive(), "the loop died of a tick"
        produce_requests(stack, serde, in_t, second)  # and it goes on after more failed ticks
        wait_for(lambda: committed_offset(stack, group, in_t) == 6, timeout=30, what="the next messages")
    finally:
        loop.stop()
        runner.join(30)
    assert run_ids_of(stack, serde, out_t, read_topic(stack, out_t)) == sorted(first + second)
    assert loop.tick_failures >= 1


def test_ticks_resume_after_a_failure_and_their_outputs_commit(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    loop = _loop(stack, topics, BadTimers(out_t, fails=2))
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        produce_requests(stack, serde, in_t, [unique("run")])
        wait_for(
            lambda: len(read_topic(stack, out_t, timeout=2)) == 2 or not runner.is_alive(),
            timeout=30,
            what="the message's and the timer's outputs",
        )
        assert runner.is_alive(), "the loop died of a tick"
    finally:
        loop.stop()
        runner.join(30)
    assert "timer-run" in run_ids_of(stack, serde, out_t, read_topic(stack, out_t))
    assert loop.tick_failures == 2
