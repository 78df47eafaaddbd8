"""A tool defined only as data (refund@1, docs/examples/tools/refund.v1.yaml) passes the same exactly-once
checks as the built-in tools: kill -9 of the adapters mid-call, accept-then-timeout, and the provider's
per-effect count shows one effect."""

from __future__ import annotations

import pytest
from harness import kill_and_restart
from helpers import wait_for
from test_runs import submit

from infra.simulators.dedup import effect_id

pytestmark = pytest.mark.e2e
REFUND = {"charge_id": "ch_1a2b3c", "amount_cents": 1250}


def _one_effect(sims, run_id: str, key: str) -> None:
    payments = sims.stats("payments")  # ground truth: the provider's own records
    assert payments["by_effect"] == {effect_id("acme", run_id, "refund"): 1}, payments
    assert payments["deliveries"] == 1 and payments["by_key"] == {key: 1}


def test_accept_then_timeout_retries_under_the_same_key_and_refunds_once(stack, sims, events):
    sims.fault("payments", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "completed"
    log = [e for e in events.of(run_id) if e.step == "refund"]
    failed = next(e for e in log if e.event == "tool_failed")
    assert failed.tool.failure_class == "unknown_outcome" and failed.attempt == 1
    # The mode travels with the fact, read from the YAML definition.
    assert {e.tool.idempotency_mode for e in log if e.event == "tool_called"} == {"provider_key"}
    retry = next(e for e in log if e.event == "retry_scheduled")
    assert "provider_key adapter makes repeating with the same key safe" in retry.retry.reason
    succeeded = next(e for e in log if e.event == "tool_succeeded")
    committed = next(e for e in log if e.event == "step_committed")
    assert succeeded.attempt == 2 and committed.commit.external_id == succeeded.tool.external_id
    assert succeeded.tool.external_id.startswith("re_")
    [key] = {e.idempotency_key for e in log if e.idempotency_key}
    _one_effect(sims, run_id, key)


def test_an_adapter_killed_mid_call_is_retried_under_the_same_key_and_refunds_once(stack, sims, events):
    # The provider makes the refund at once and then holds its answer: the adapter is killed while it
    # waits, so the effect exists and nobody heard of it. The retry must find it, never refund again.
    sims.fault("payments", kind="accept_then_timeout", ms=4000)
    run_id = submit(stack, "refund_once", REFUND)
    wait_for(
        lambda: ("tool_called", 1) in [(e.event, e.attempt) for e in events.of(run_id)],
        20,
        "the first call to start",
    )
    wait_for(lambda: sims.stats("payments")["deliveries"] == 1, 10, "the provider to make the refund")
    kill_and_restart(stack, "adapters")

    assert events.wait_terminal(run_id) == "completed"
    log = events.of(run_id)
    retry = next(e for e in log if e.event == "retry_scheduled")
    assert retry.retry.failure_class == "unknown_outcome"
    assert not any(e.event == "tool_succeeded" and e.attempt == 1 for e in log)  # its caller died
    [key] = {e.idempotency_key for e in log if e.event == "tool_called"}
    succeeded = next(e for e in log if e.event == "tool_succeeded")
    _one_effect(sims, run_id, key)
    assert succeeded.attempt >= 2 and sims.stats("payments")["replays"] >= 1  # the retry was answered


def test_a_drifted_answer_is_held_with_its_json_path_and_evidence(stack, sims, events):
    sims.fault("payments", kind="null_field", field="refund_id")
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "quarantined"
    [failed] = [e for e in events.of(run_id) if e.event == "tool_failed"]
    assert failed.tool.failure_class == "validation" and failed.tool.effect_accepted is True
    assert "$.refund_id: None is not of type 'string'" in failed.error
    assert sims.stats("payments")["by_effect"] == {effect_id("acme", run_id, "refund"): 1}


def test_past_the_providers_key_retention_an_unknown_outcome_is_held_not_resent(stack, sims, events):
    # refund_brief_memory@1 is refund@1 at a provider that forgets keys after a second: by the time the
    # lost answer is known, repeating the key is no safer than having none.
    sims.fault("payments", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "refund_brief_memory", REFUND)
    assert events.wait_terminal(run_id) == "quarantined"
    log = events.of(run_id)
    [held] = [e for e in log if e.event == "quarantined"]
    assert "forgets idempotency keys after 1 s" in held.quarantine.reason
    assert [e.attempt for e in log if e.event == "tool_called"] == [1]  # never resent
    assert sims.stats("payments")["by_effect"] == {effect_id("acme", run_id, "refund"): 1}
