"""Background calls: nothing starts before its batch commits; outputs survive an aborted hand-back."""

from __future__ import annotations

import threading

from helpers import wait_for

from keel.background import BackgroundCalls
from keel.txloop import Output

P0, P1 = ("keel.step-commands", 0), ("keel.step-commands", 1)


def out(name: str) -> Output:
    return Output("t", name, name.encode())


def test_staged_work_starts_only_once_its_batch_committed() -> None:
    calls, started = BackgroundCalls(2), threading.Event()
    calls.stage(P0, lambda: (started.set(), [out("a")])[1])
    assert not started.wait(0.2)  # the batch that recorded the call has not committed yet
    calls.committed()
    wait_for(started.is_set, 5, "the call to start")
    wait_for(lambda: calls.pending() == 0, 5, "the call to finish")
    assert [o.key for o in calls.take()] == ["a"]


def test_an_aborted_batch_drops_its_staged_work() -> None:
    calls, ran = BackgroundCalls(1), []
    calls.stage(P0, lambda: ran.append(1) or [])
    calls.aborted()  # the batch is redelivered and stages the call again
    calls.committed()
    assert calls.pending() == 0 and ran == []


def test_outputs_handed_to_an_aborted_transaction_are_handed_out_again() -> None:
    calls = BackgroundCalls(1)
    calls.stage(P0, lambda: [out("a")])
    calls.committed()
    wait_for(lambda: calls.pending() == 0, 5, "the call to finish")
    assert [o.key for o in calls.take()] == ["a"]
    calls.aborted()
    assert [o.key for o in calls.take()] == ["a"]  # not lost with the aborted transaction
    calls.committed()
    assert calls.take() == []  # durable now: never handed out twice


def test_calls_not_started_for_revoked_partitions_are_dropped() -> None:
    calls, gate, ran = BackgroundCalls(1), threading.Event(), []
    calls.stage(P1, lambda: (gate.wait(5), ran.append("busy"))[1] or [])  # occupies the only worker
    calls.committed()
    wait_for(lambda: calls.pending() == 1 and not calls._queue, 5, "the first call to be running")
    calls.stage(P0, lambda: ran.append("p0") or [])
    calls.stage(P1, lambda: ran.append("p1") or [])
    calls.committed()
    assert calls.drop([P1]) == 1
    gate.set()
    wait_for(lambda: calls.pending() == 0, 5, "the queue to drain")
    assert ran == ["busy", "p0"]  # the running call finished; the queued one of P1 was never made


def test_a_failing_call_loses_only_its_own_result() -> None:
    calls = BackgroundCalls(1)
    calls.stage(P0, lambda: 1 / 0)  # type: ignore[arg-type, return-value]
    calls.stage(P0, lambda: [out("b")])
    calls.committed()
    wait_for(lambda: calls.pending() == 0, 5, "both calls to finish")
    assert [o.key for o in calls.take()] == ["b"]
