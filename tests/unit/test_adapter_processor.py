"""The adapters' processor against the real simulators (no broker): one attempt per key in flight, no
call after the deadline, blocked calls that say why, and accepted effects whose answer broke the contract.

The loop's part is played here as the loop plays it: `handle` per command, then every after-commit work
of the batch on parallel threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from helpers import unique, wait_for

import keel.events as ev
from infra.simulators.dedup import effect_id
from keel.breaker import BreakerPolicy, BreakerRegistry
from keel.contracts import LedgerRecord, RunEvent, ToolCommand
from keel.idempotency import idempotency_key
from keel.txloop import Handled, Output, Record
from services.adapters import AdapterSettings
from services.adapters.service import AdapterProcessor

pytestmark = pytest.mark.timeout(30)

MESSAGE = {"to": "ada@example.com", "subject": "Hello", "body": "First draft"}
ACTIVITY = {"contact_email": "ada@example.com", "kind": "email_sent", "note": "intro"}


def command(
    tool: str, payload: dict[str, Any], run_id: str, attempt: int = 1, deadline_ms: int | None = None
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


def record(cmd: ToolCommand, offset: int = 0) -> Record:
    return Record("keel.tool-commands", 0, offset, cmd.run_id, cmd, 0)


def facts(handled: Sequence[Handled]) -> list[RunEvent]:
    return [h.value for h in handled if isinstance(h, Output) and isinstance(h.value, RunEvent)]


def results(processor: AdapterProcessor) -> list[RunEvent]:
    """The batch commits (the loop's on_commit): its calls run in the background; their facts, once
    every one has finished, as the loop's tick hands them out."""
    processor.on_commit()
    wait_for(lambda: processor.calls.pending() == 0, 10, "the calls to finish")
    return facts(processor.tick(ev.now_ms()))


def run_batch(processor: AdapterProcessor, cmds: list[ToolCommand]) -> tuple[list[RunEvent], list[RunEvent]]:
    """(facts committed with the batch, facts of its calls, run in parallel after the commit)."""
    handled = [processor.handle(record(c, i)) for i, c in enumerate(cmds)]
    return [f for hs in handled for f in facts(hs)], results(processor)


@pytest.fixture
def control(email_url: str, crm_url: str) -> Iterator[dict[str, httpx.Client]]:
    clients = {n: httpx.Client(base_url=u, timeout=5.0) for n, u in (("email", email_url), ("crm", crm_url))}
    for client in clients.values():
        client.post("/_reset").raise_for_status()
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def processor(email_url: str, crm_url: str) -> Iterator[AdapterProcessor]:
    settings = AdapterSettings(email_url=email_url, crm_url=crm_url, tool_timeout_s=3.0)
    with httpx.Client(trust_env=False) as http:
        yield AdapterProcessor(settings, {}, http)


def stats(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/_stats").json()
    return result


def test_two_attempts_of_one_key_in_one_batch_reach_the_provider_once(
    control: dict[str, httpx.Client], processor: AdapterProcessor
) -> None:
    # The CRM without key dedup, and slow lookups: two attempts calling in parallel would both hear
    # "not found" and both write.
    control["crm"].post("/_mode", json={"dedup": "none"}).raise_for_status()
    rule = {"kind": "latency", "ms": 400, "times": 2, "path": "/v1/activities", "method": "GET"}
    control["crm"].post("/_faults", json=rule).raise_for_status()
    run_id = unique("run")
    first, second = command("crm@1", ACTIVITY, run_id, 1), command("crm@1", ACTIVITY, run_id, 2)
    committed, later = run_batch(processor, [first, second])
    assert [f.event for f in committed] == ["tool_called", "tool_called"]
    blocked = [f for f in later if f.tool and f.tool.blocked_reason]
    succeeded = [f for f in later if f.event == "tool_succeeded"]
    assert len(blocked) == 1 and len(succeeded) == 1
    assert blocked[0].event == "tool_failed" and "in flight" in (blocked[0].tool.blocked_reason or "")
    assert stats(control["crm"])["by_effect"] == {effect_id("acme", run_id, "send"): 1}


def test_a_command_past_its_deadline_is_never_called(
    control: dict[str, httpx.Client], processor: AdapterProcessor
) -> None:
    cmd = command("email@1", MESSAGE, unique("run"), deadline_ms=ev.now_ms() - 5)
    handled = processor.handle(record(cmd))
    assert results(processor) == []  # no call staged
    [fact] = facts(handled)
    assert fact.event == "tool_failed" and fact.tool is not None
    assert "deadline passed" in (fact.tool.blocked_reason or "") and "handled" in (fact.error or "")
    assert fact.tool.failure_class == "transient"
    assert stats(control["email"])["requests"] == 0


def test_a_deadline_passing_before_the_after_commit_work_stops_the_call(
    control: dict[str, httpx.Client], processor: AdapterProcessor
) -> None:
    deadline = ev.now_ms() + 300
    cmd = command("email@1", MESSAGE, unique("run"), deadline_ms=deadline)
    handled = processor.handle(record(cmd))
    assert [f.event for f in facts(handled)] == ["tool_called"]
    wait_for(lambda: ev.now_ms() > deadline, 5, "the deadline to pass")  # the commit comes late
    [fact] = results(processor)
    assert fact.event == "tool_failed" and "deadline passed" in (fact.tool.blocked_reason or "")
    assert stats(control["email"])["requests"] == 0


def test_an_open_circuit_says_the_provider_was_not_called(
    control: dict[str, httpx.Client], email_url: str, crm_url: str
) -> None:
    settings = AdapterSettings(email_url=email_url, crm_url=crm_url, tool_timeout_s=3.0)
    breakers = BreakerRegistry(BreakerPolicy(failure_threshold=1, open_ms=60_000))
    control["email"].post("/_faults", json={"kind": "error", "status": 500}).raise_for_status()
    with httpx.Client(trust_env=False) as http:
        processor = AdapterProcessor(settings, {}, http, breakers)
        _, tripped = run_batch(processor, [command("email@1", MESSAGE, unique("run"))])
        _, refused = run_batch(processor, [command("email@1", MESSAGE, unique("run"))])
    assert [f.event for f in tripped] == ["tool_failed", "circuit_opened"]
    assert tripped[0].tool is not None and tripped[0].tool.blocked_reason is None  # it did call
    [fact] = refused
    assert fact.tool is not None and fact.tool.failure_class == "rate_limited"
    assert "circuit open" in (fact.tool.blocked_reason or "")
    assert stats(control["email"])["requests"] == 1


def test_a_drifted_2xx_is_an_accepted_effect_with_the_providers_body_as_evidence(
    control: dict[str, httpx.Client], processor: AdapterProcessor
) -> None:
    control["email"].post("/_faults", json={"kind": "null_field", "field": "message_id"}).raise_for_status()
    _, [fact] = run_batch(processor, [command("email@1", MESSAGE, unique("run"))])
    assert fact.event == "tool_failed" and fact.tool is not None
    assert fact.tool.failure_class == "validation" and fact.tool.effect_accepted is True
    assert "$.message_id" in (fact.error or "") and fact.tool.http_status == 200
    evidence = json.loads(fact.output_json or "{}")
    assert evidence == {"message_id": None, "status": "accepted", "to": MESSAGE["to"]}
    assert fact.output_ref and fact.output_ref.startswith("sha256:")


def test_a_committed_key_is_answered_from_the_ledger(
    control: dict[str, httpx.Client], email_url: str, crm_url: str
) -> None:
    cmd = command("email@1", MESSAGE, unique("run"))
    done = LedgerRecord(
        idempotency_key=cmd.idempotency_key,
        tenant_id="acme",
        workflow="outreach",
        run_id=cmd.run_id,
        step="send",
        attempt=1,
        tool="email@1",
        external_id="msg_1",
        committed_at=datetime.now(UTC),
    )
    settings = AdapterSettings(email_url=email_url, crm_url=crm_url)
    with httpx.Client(trust_env=False) as http:
        processor = AdapterProcessor(settings, {cmd.idempotency_key: done}, http)
        [fact] = facts(processor.handle(record(cmd)))
    assert fact.event == "tool_succeeded" and fact.tool is not None and fact.tool.already_committed
    assert stats(control["email"])["requests"] == 0


def test_a_call_starts_once_its_batch_committed_and_never_holds_the_loop(
    control: dict[str, httpx.Client], processor: AdapterProcessor
) -> None:
    rule = {"kind": "latency", "ms": 400, "times": 1, "path": "/v1/messages", "method": "POST"}
    control["email"].post("/_faults", json=rule).raise_for_status()
    cmd = command("email@1", MESSAGE, unique("run"))
    started = time.monotonic()
    [called] = facts(processor.handle(record(cmd)))
    assert called.event == "tool_called" and stats(control["email"])["requests"] == 0
    processor.on_commit()  # the call starts now, on a worker; the loop's turn is over at once
    assert time.monotonic() - started < 0.3
    assert processor.tick(ev.now_ms()) == []  # nothing finished yet: the next batch goes on
    wait_for(lambda: processor.calls.pending() == 0, 10, "the call to finish")
    [fact] = facts(processor.tick(ev.now_ms()))
    assert fact.event == "tool_succeeded" and stats(control["email"])["requests"] == 1
