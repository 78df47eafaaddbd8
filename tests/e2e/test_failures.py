"""Failure semantics under kill -9: lost attempts time out and retry under the same key; timers survive."""

from __future__ import annotations

import pytest
from harness import kill_and_restart
from helpers import wait_for
from test_runs import submit

pytestmark = pytest.mark.e2e
MAIL = {"to": "ada@example.com", "subject": "Hello"}


def test_an_adapter_killed_mid_call_is_caught_by_the_step_timeout_and_retried_under_the_same_key(
    stack, sims, events
):
    sims.fault("email", kind="latency", ms=4000)  # the first send hangs long enough to kill its caller
    run_id = submit(stack, "quick_send", MAIL)
    wait_for(
        lambda: ("tool_called", 1) in [(e.event, e.attempt) for e in events.of(run_id)],
        20,
        "the first call to start",
    )
    kill_and_restart(stack, "adapters")

    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    retry = next(e for e in log if e.event == "retry_scheduled")
    assert retry.retry.failure_class == "unknown_outcome" and "timed out" in retry.error
    assert not any(e.event == "tool_succeeded" and e.attempt == 1 for e in log)  # its caller died
    keys = {e.idempotency_key for e in log if e.event == "tool_called"}
    assert len(keys) == 1  # every attempt under the same key
    [key] = keys
    wait_for(lambda: sims.stats("email")["faults_fired"].get("latency") == 1, 10, "the hung request to end")
    email = sims.stats("email")
    assert email["deliveries"] == 1 and email["by_key"] == {key: 1}


def test_a_retry_timer_survives_a_scheduler_kill_and_fires_on_time(stack, sims, events):
    sims.fault("email", kind="rate_limit", retry_after=4)
    run_id = submit(stack, "quick_send", MAIL)
    wait_for(lambda: "retry_scheduled" in events.kinds(run_id), 20, "the retry to be scheduled")
    kill_and_restart(stack, "scheduler")

    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    retry = next(e for e in log if e.event == "retry_scheduled")
    assert retry.retry.failure_class == "rate_limited" and retry.retry.delay_ms >= 4000
    second = next(e for e in log if e.event == "step_started" and e.attempt == 2)
    late = (second.ts - retry.retry.fire_at).total_seconds()
    assert 0 <= late < 3.0, f"the timer fired {late:.2f}s after it was due"
    assert sims.stats("email")["deliveries"] == 1


def test_a_provider_outage_opens_the_breaker_which_probes_and_closes(stack, sims, events):
    sims.fault("email", kind="error", status=500, times=5)
    run_id = submit(stack, "patient_send", MAIL)
    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    kinds = [e.event for e in log]
    opened, half, closed = (kinds.index(k) for k in ("circuit_opened", "circuit_half_open", "circuit_closed"))
    assert opened < half < closed
    refused = [e for e in log[opened:half] if e.event == "tool_failed"]
    assert refused and all("circuit open" in e.error for e in refused)  # failed fast while open
    assert all(e.tool.failure_class == "rate_limited" for e in refused)
    email = sims.stats("email")
    # Ground truth: the provider saw the failing calls and the one probe that succeeded, nothing while open.
    assert email["faults_fired"] == {"error": 5} and email["deliveries"] == 1
    assert email["requests"] == 6
