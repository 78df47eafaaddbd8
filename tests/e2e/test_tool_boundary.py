"""The adapters' boundary with the outside world, through the real broker and the real adapters service:
one delivery per logical effect, no call after a deadline, accepted effects kept with their evidence, and
the per-effect check of the chaos verdict catching a real duplicate."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from harness import Simulators
from helpers import read_topic, unique, wait_for
from test_runs import submit

import keel.events as ev
from infra.simulators.dedup import effect_id
from keel.contracts import RunEvent, ToolCommand
from keel.idempotency import idempotency_key
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import LEDGER, TOOL_COMMANDS
from keel.workflows import Catalog
from keel_ops.stack import Background, service_process, start_background, stop_background

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))
from verify import Evidence, judge  # noqa: E402 - the chaos verdict, beside the chaos test

pytestmark = pytest.mark.e2e
MESSAGE = {"to": "ada@example.com", "subject": "Hello", "body": "First draft"}
ACTIVITY = {"contact_email": "ada@example.com", "kind": "email_sent", "note": "intro"}
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


def command(
    tool: str, payload: dict, run_id: str, attempt: int = 1, deadline_ms: int | None = None
) -> ToolCommand:
    return ToolCommand(
        command_id=unique("cmd"),
        run_id=run_id,
        tenant_id="acme",
        workflow="outreach",
        workflow_version=1,
        step="send",
        attempt=attempt,
        tool=tool,
        payload_json=json.dumps(payload),
        idempotency_key=idempotency_key("acme", "outreach", run_id, "send", payload),
        issued_at=datetime.now(UTC),
        deadline=None if deadline_ms is None else ev.at_ms(deadline_ms),
    )


def publish(settings: Settings, *cmds: ToolCommand) -> None:
    """All in one flush, so the adapters take them in one poll batch."""
    serde = Serde(registry_client(settings.schema_registry_url))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 50})
    for cmd in cmds:
        producer.produce(TOOL_COMMANDS, key=cmd.run_id, value=serde.encode(TOOL_COMMANDS, cmd))
    assert producer.flush(10) == 0


def tool_facts(events, run_id: str, count: int) -> list[RunEvent]:
    results = ("tool_succeeded", "tool_failed")
    wait_for(lambda: sum(e.event in results for e in events.of(run_id)) >= count, 30, f"{count} tool results")
    return [e for e in events.of(run_id) if e.event.startswith("tool_")]


def dedup(sims: Simulators, name: str, mode: str) -> None:
    httpx.post(f"{sims.urls[name]}/_mode", json={"dedup": mode}).raise_for_status()


def test_two_attempts_of_one_key_in_one_batch_deliver_once(stack, sims, events):
    # No key dedup at the CRM and slow lookups: two attempts calling in parallel would both hear "not
    # found" and both write. Only the adapters' one-attempt-per-key rule keeps this to one delivery.
    dedup(sims, "crm", "none")
    sims.fault("crm", kind="latency", ms=400, times=2, path="/v1/activities", method="GET")
    run_id = unique("run")
    publish(stack, command("crm@1", ACTIVITY, run_id, 1), command("crm@1", ACTIVITY, run_id, 2))
    facts = tool_facts(events, run_id, 2)
    assert sims.stats("crm")["by_effect"] == {effect_id("acme", run_id, "send"): 1}
    # Both in one batch: both are called and the second is refused when its call starts; in two batches
    # the second is refused when it is handled (the first is in flight), before any tool_called.
    assert len([e for e in facts if e.event == "tool_called"]) in (1, 2)
    blocked = [e for e in facts if e.tool and e.tool.blocked_reason]
    assert len(blocked) == 1 and "in flight" in blocked[0].tool.blocked_reason
    assert [e.event for e in facts if e.event == "tool_succeeded"] == ["tool_succeeded"]


def test_a_command_past_its_deadline_never_reaches_the_provider(stack, sims, events):
    run_id = unique("run")
    publish(stack, command("email@1", MESSAGE, run_id, deadline_ms=ev.now_ms() - 1000))
    [fact] = tool_facts(events, run_id, 1)
    assert fact.event == "tool_failed" and "deadline passed" in fact.tool.blocked_reason
    assert sims.stats("email")["requests"] == 0


def test_a_drifted_2xx_is_an_accepted_effect_with_the_providers_evidence(stack, sims, events):
    sims.fault("email", kind="null_field", field="message_id")
    run_id = unique("run")
    publish(stack, command("email@1", MESSAGE, run_id))
    facts = tool_facts(events, run_id, 1)
    [failed] = [e for e in facts if e.event == "tool_failed"]
    assert failed.tool.failure_class == "validation" and failed.tool.effect_accepted is True
    assert "$.message_id" in failed.error
    assert json.loads(failed.output_json) == {"message_id": None, "status": "accepted", "to": MESSAGE["to"]}
    assert sims.stats("email")["by_effect"] == {effect_id("acme", run_id, "send"): 1}


@pytest.fixture
def adapters_without_lookup(stack: Settings) -> Iterator[None]:
    """The adapters service replaced, for one test, by a build whose crm@1 skips its lookup."""
    stop_background(stack, "adapters-0")
    broken = Background(
        "adapters-0",
        [sys.executable, str(Path(__file__).with_name("adapters_without_lookup.py")), "--instance", "0"],
    )
    start_background(stack, broken)
    try:
        yield
    finally:
        stop_background(stack, "adapters-0")
        start_background(stack, service_process("adapters"))


def _verdict(stack: Settings, sims: Simulators, events, run_id: str):
    serde = Serde(registry_client(stack.schema_registry_url))
    ledger = [serde.decode(LEDGER, m.value()) for m in read_topic(stack, LEDGER)]
    catalog = Catalog.configured()
    side_effects = {w: {s.name for s in catalog.get(w).steps if s.side_effects} for w in catalog.names()}
    stats = {name: sims.stats(name) for name in ("email", "crm")}
    return judge(Evidence([run_id], {run_id: events.of(run_id)}, ledger, stats, side_effects))


def _lost_crm_answer_then_retry(stack: Settings, sims: Simulators, events) -> str:
    """A run whose CRM write is accepted and its answer lost: the retry must not write again."""
    dedup(sims, "crm", "none")
    sims.fault("crm", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "chaos_email", LEAD)
    assert events.wait_terminal(run_id) == "completed"
    crm_attempts = {
        e.attempt for e in events.of(run_id) if e.step == "log_to_crm" and e.event == "tool_called"
    }
    assert len(crm_attempts) >= 2  # the lost answer was retried
    return run_id


def test_the_per_effect_check_is_green_when_the_lookup_protects_the_crm(stack, sims, events):
    run_id = _lost_crm_answer_then_retry(stack, sims, events)
    verdict = _verdict(stack, sims, events, run_id)
    assert verdict.failures() == {}, verdict.figures()
    assert verdict.deliveries == verdict.committed_effects == 2


def test_the_per_effect_check_catches_the_duplicate_of_an_adapter_without_lookup(
    stack, sims, events, adapters_without_lookup
):
    run_id = _lost_crm_answer_then_retry(stack, sims, events)
    verdict = _verdict(stack, sims, events, run_id)
    crm = effect_id("acme", run_id, "log_to_crm")
    assert verdict.duplicates == {crm: 2}, verdict.figures()
    assert set(verdict.failures()) == {"duplicates", "unbalanced"}
    assert verdict.deliveries == 3 and verdict.committed_effects == 2
