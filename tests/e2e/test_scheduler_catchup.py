"""Timers wait for the backlog: a scheduler restarted after its step's deadline passed reads the result that
landed while it was down before it fires any timer of that partition."""

from __future__ import annotations

import time

import pytest
from harness import kill
from helpers import wait_for
from test_runs import submit

from keel_ops.stack import service_process, start_background

pytestmark = pytest.mark.e2e
MAIL = {"to": "ada@example.com", "subject": "Hello"}
SEND_TIMEOUT_S = 2.5  # quick_send's step timeout (tests/workflows/quick_send.v1.yaml)


def test_a_result_that_landed_while_the_scheduler_was_down_wins_over_its_overdue_deadline(
    stack, sims, events
):
    # Long enough to kill the scheduler mid-call, shorter than the adapters' client timeout (1 s here).
    sims.fault("email", kind="latency", ms=700, times=1)
    run_id = submit(stack, "quick_send", MAIL)
    wait_for(lambda: "tool_called" in events.kinds(run_id), 30, "the send to be called")
    kill(stack, "scheduler")

    # While the scheduler is down the adapter's result lands and is committed ...
    wait_for(lambda: "step_committed" in events.kinds(run_id), 30, "the send to be committed")
    issued = next(e for e in events.of(run_id) if e.event == "started").ts.timestamp()
    # ... and the attempt's deadline passes.
    wait_for(lambda: time.time() > issued + SEND_TIMEOUT_S + 0.5, 10, "the send's deadline to pass")
    start_background(stack, service_process("scheduler"))

    assert events.wait_terminal(run_id, 60) == "completed"
    kinds = events.kinds(run_id)
    assert not {"retry_scheduled", "quarantined", "failed"} & set(kinds), kinds
    assert [e.attempt for e in events.of(run_id) if e.event == "step_started"] == [1]
    assert sims.stats("email")["deliveries"] == 1
