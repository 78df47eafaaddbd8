"""Cross-tenant messages produced straight onto the topics (docs/tenancy.md, Tenant provenance): a tool
command whose key names another tenant, and a fact or control command of another tenant for a run, are
dead-lettered with `tenant_mismatch`; the provider sees no call and the run goes on as its own tenant's.

Produced here with the test's own broker access, as a process that got past the ACLs would: this is the
check behind them, not the ACLs themselves."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Producer
from helpers import read_topic, unique, wait_for
from test_runs import submit

from infra.simulators.dedup import effect_id
from keel.contracts import CommitDetail, ControlCommand, RunEvent, ToolCommand
from keel.idempotency import idempotency_key
from keel.provenance import TENANT_MISMATCH
from keel.serde import Serde, registry_client
from keel.topics import CONTROL, DEAD_LETTERS, RUN_EVENTS, TOOL_COMMANDS

pytestmark = pytest.mark.e2e
REFUND = {"charge_id": "ch_1a2b3c", "amount_cents": 1250}


def produce(stack, serde: Serde, topic: str, key: str, value: object) -> tuple[str, int, int]:
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "partitioner": "murmur2_random"})
    where: list = []
    producer.produce(
        topic,
        key=key,
        value=serde.encode(topic, value),
        on_delivery=lambda e, m: where.append((m.topic(), m.partition(), m.offset())),
    )
    assert producer.flush(10) == 0
    return where[0]


def letters(stack, serde: Serde) -> dict[tuple[str, int, int, str], object]:
    """Dead letters by origin and the group that refused the message."""
    found = (serde.decode(DEAD_LETTERS, m.value()) for m in read_topic(stack, DEAD_LETTERS))
    return {(x.source_topic, x.source_partition, x.source_offset, x.consumer_group): x for x in found}


def globex_fact(run_id: str, kind: str, **fields: object) -> RunEvent:
    """A refund step's fact claiming tenant globex, with the forged refund as its output."""
    return RunEvent(
        event_id=str(uuid.uuid4()),
        run_id=run_id,
        tenant_id="globex",
        workflow="refund_once",
        step="refund",
        event=kind,
        ts=datetime.now(UTC),
        attempt=1,
        source="adapters",
        output_json=json.dumps({"refund_id": "re_forged", "status": "succeeded"}),
        **fields,  # type: ignore[arg-type]
    )


def test_forged_commands_and_facts_of_another_tenant_are_dead_lettered_and_touch_nothing(stack, sims, events):
    serde = Serde(registry_client(stack.schema_registry_url))
    sims.fault("payments", kind="latency", ms=3000)  # acme's refund stays in flight meanwhile
    run_id = submit(stack, "refund_once", REFUND)
    wait_for(lambda: "tool_called" in events.kinds(run_id), 30, "acme's refund call")

    # 1. globex's command carrying acme's key: acme's ledger entry, globex's credentials. Never called.
    other_run = unique("run")
    payload = {"charge_id": "ch_forged", "amount_cents": 99_999}
    forged_call = ToolCommand(
        command_id=unique("cmd"),
        run_id=other_run,
        tenant_id="globex",
        workflow="refund_once",
        workflow_version=1,
        step="refund",
        attempt=1,
        tool="refund@1",
        payload_json=json.dumps(payload),
        idempotency_key=idempotency_key("acme", "refund_once", other_run, "refund", payload),
        issued_at=datetime.now(UTC),
    )
    # 2. globex claiming acme's step is done, and 3. globex cancelling acme's run.
    forged_fact = globex_fact(
        run_id, "step_committed", commit=CommitDetail(external_id="re_forged", committed_at=datetime.now(UTC))
    )
    forged_cancel = ControlCommand(
        command_id=unique("cancel"),
        run_id=run_id,
        tenant_id="globex",
        action="cancel",
        reason="not my run",
        issued_by="key:globex-forged",
        issued_at=datetime.now(UTC),
    )
    # 4. globex's tool result under acme's key: the ledger must not commit it, nor answer it.
    forged_result = globex_fact(other_run, "tool_succeeded", idempotency_key=forged_call.idempotency_key)
    refused_by = {
        (*produce(stack, serde, TOOL_COMMANDS, other_run, forged_call), "keel-adapters"): "command",
        (*produce(stack, serde, RUN_EVENTS, run_id, forged_fact), "keel-scheduler"): "fact",
        (*produce(stack, serde, CONTROL, run_id, forged_cancel), "keel-scheduler"): "cancel",
        (*produce(stack, serde, RUN_EVENTS, other_run, forged_result), "keel-ledger"): "result",
    }
    wait_for(lambda: set(refused_by) <= set(letters(stack, serde)), 60, "four dead letters")
    found = letters(stack, serde)
    for where, what in refused_by.items():
        assert found[where].error_class == TENANT_MISMATCH, (what, found[where].reason)
        assert "'acme'" in found[where].reason and "'globex'" in found[where].reason, what

    # acme's run is acme's: it completes with the provider's refund, not the forged one, and is not
    # canceled; the provider got acme's one refund and nothing of the forged command.
    assert events.wait_terminal(run_id, 60) == "completed"
    log = [e for e in events.of(run_id) if e.event_id != forged_fact.event_id]  # the log holds the forgery
    [committed] = [e for e in log if e.event == "step_committed" and e.step == "refund"]
    assert committed.commit.external_id != "re_forged" and committed.tenant_id == "acme"
    assert {e.tenant_id for e in log} == {"acme"} and not [e for e in log if e.event == "canceled"]
    # Nothing answered the forged command or result: no service wrote a fact of that run.
    assert [e.event_id for e in events.of(other_run)] == [forged_result.event_id]
    assert sims.stats("payments")["by_effect"] == {effect_id("acme", run_id, "refund"): 1}

    # 5. The projection: a forged commit after the run's end must not rewrite acme's step. It is kept as
    # a projection error instead (the projector's dead letter), and acme's row keeps the provider's id.
    late = dataclasses.replace(forged_fact, event_id=str(uuid.uuid4()))
    topic, partition, offset = produce(stack, serde, RUN_EVENTS, run_id, late)
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:

        def kept_as_error() -> list[tuple[str, str]]:
            return conn.execute(
                "SELECT error_class, reason FROM keel.projection_errors "
                'WHERE topic = %s AND "partition" = %s AND "offset" = %s',
                (topic, partition, offset),
            ).fetchall()

        wait_for(lambda: bool(kept_as_error()), 30, "the forged commit kept as a projection error")
        assert kept_as_error()[0][0] == TENANT_MISMATCH
        [(external_id,)] = conn.execute(
            "SELECT external_id FROM keel.steps WHERE run_id = %s AND step = 'refund'", (run_id,)
        ).fetchall()
        assert external_id == committed.commit.external_id
