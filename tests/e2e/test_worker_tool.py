"""A tool served by a separate worker process (keel.worker, tests/workers/refunds.py: issue_refund@1 in
`lookup` mode at the payments simulator) passes the same exactly-once checks as the built-in tools: kill -9
of the worker mid-call, accept-then-timeout, and the provider's per-effect count shows one effect. The
provider deduplicates nothing here (dedup mode `none`): only the worker's lookup and the ledger stand
between a retry and a second refund. A run whose tool no worker serves waits, visibly, and completes once
a worker starts."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest
from helpers import wait_for
from test_runs import submit

from infra.simulators.dedup import effect_id
from keel.settings import Settings
from keel.tooldefs import ToolRegistry
from keel_ops.stack import Background, running_pid, start_background, stop_background
from keel_ops.workers import Backlog, backlogs

pytestmark = pytest.mark.e2e
REFUND = {"charge_id": "ch_9z8y7x", "amount_cents": 700}
WORKER = Background(
    "worker-payments-0", [sys.executable, "-m", "keel.worker", "tests.workers.refunds"], principal="worker"
)


@pytest.fixture
def worker(stack: Settings, keel: object) -> Iterator[Settings]:
    start_background(stack, WORKER)
    yield stack
    stop_background(stack, WORKER.name)


@pytest.fixture
def no_dedup(sims):  # type: ignore[no-untyped-def]
    sims.mode("payments", dedup="none")  # every POST is a delivery: only Keel's guarantees remain
    return sims


def _one_effect(sims, run_id: str) -> None:  # type: ignore[no-untyped-def]
    payments = sims.stats("payments")  # ground truth: the provider's own records
    assert payments["by_effect"] == {effect_id("acme", run_id, "refund"): 1}, payments


def test_accept_then_timeout_is_found_by_the_lookup_and_refunds_once(worker, no_dedup, events):  # type: ignore[no-untyped-def]
    no_dedup.fault("payments", kind="accept_then_timeout", ms=2500)
    run_id = submit(worker, "worker_refund", REFUND)
    assert events.wait_terminal(run_id) == "completed"
    log = [e for e in events.of(run_id) if e.step == "refund"]
    failed = next(e for e in log if e.event == "tool_failed")
    assert failed.tool.failure_class == "unknown_outcome" and failed.attempt == 1
    assert failed.source == "worker:payments"
    assert {e.tool.idempotency_mode for e in log if e.event == "tool_called"} == {"lookup"}
    succeeded = next(e for e in log if e.event == "tool_succeeded")
    committed = next(e for e in log if e.event == "step_committed")
    assert succeeded.attempt >= 2 and committed.commit.external_id == succeeded.tool.external_id
    assert succeeded.tool.external_id.startswith("re_")
    _one_effect(no_dedup, run_id)


def test_a_worker_killed_mid_call_is_retried_under_the_same_key_and_refunds_once(worker, no_dedup, events):  # type: ignore[no-untyped-def]
    # The provider makes the refund at once and holds its answer: the worker is killed while it waits,
    # so the effect exists and nobody heard of it. The retry's lookup must find it, never refund again.
    no_dedup.fault("payments", kind="accept_then_timeout", ms=4000)
    run_id = submit(worker, "worker_refund", REFUND)
    wait_for(
        lambda: ("tool_called", 1) in [(e.event, e.attempt) for e in events.of(run_id)],
        30,
        "the first call to start",
    )
    wait_for(lambda: no_dedup.stats("payments")["deliveries"] == 1, 10, "the provider to make the refund")
    pid = running_pid(worker, WORKER.name)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: running_pid(worker, WORKER.name) is None, 10, "the worker to die")
    start_background(worker, WORKER)

    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    # Its caller died mid-call: attempt 1 never reported, the step's deadline caught it.
    assert not any(e.event in ("tool_succeeded", "tool_failed") and e.attempt == 1 for e in log)
    retry = next(e for e in log if e.event == "retry_scheduled")
    assert retry.retry.failure_class == "unknown_outcome"
    [key] = {e.idempotency_key for e in log if e.event == "tool_called"}
    succeeded = next(e for e in log if e.event == "tool_succeeded")
    assert succeeded.attempt >= 2 and succeeded.idempotency_key == key
    _one_effect(no_dedup, run_id)


def _payments(settings: Settings) -> Backlog:
    [found] = [b for b in backlogs(settings, ToolRegistry.configured()) if b.group == "payments"]
    return found


def test_a_run_whose_worker_is_not_running_waits_visibly_and_completes_once_one_starts(  # type: ignore[no-untyped-def]
    stack, keel, no_dedup, events
):
    stop_background(stack, WORKER.name)
    # A stopped static member stays in its group until its session times out: wait for it to leave.
    wait_for(lambda: _payments(stack).members == 0, 30, "no worker in the payments group")
    run_id = submit(stack, "worker_refund", REFUND)
    wait_for(lambda: _payments(stack).waiting >= 1, 20, "the command to wait on keel.tool-commands.payments")
    line = _payments(stack).line()
    assert line.startswith("issue_refund@1: ") and "waiting, no worker" in line, line
    assert "completed" not in events.kinds(run_id) and no_dedup.stats("payments")["deliveries"] == 0
    start_background(stack, WORKER)
    try:
        assert events.wait_terminal(run_id, timeout=60) == "completed"
        wait_for(lambda: _payments(stack).waiting == 0, 20, "the backlog to drain")
        _one_effect(no_dedup, run_id)
    finally:
        stop_background(stack, WORKER.name)


def test_processes_n_serves_one_group_with_n_members_and_stops_them_all(stack, keel, no_dedup, events):  # type: ignore[no-untyped-def]
    pool = Background(
        "worker-payments-pool",
        [sys.executable, "-m", "keel.worker", "tests.workers.refunds", "--processes", "2", "--instance", "p"],
        principal="worker",
    )
    start_background(stack, pool)
    try:
        wait_for(lambda: _payments(stack).members == 2, 30, "two workers in the payments group")
        run_id = submit(stack, "worker_refund", REFUND)
        assert events.wait_terminal(run_id) == "completed"
        _one_effect(no_dedup, run_id)
    finally:
        stop_background(stack, pool.name)
    children = [line for line in os.popen("ps -eo args").read().splitlines() if "--instance p-" in line]
    assert children == [], children  # SIGTERM reached every child
