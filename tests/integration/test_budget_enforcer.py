"""The budget enforcer against the real broker: commands in, answers on the events topic keyed by run,
malformed commands dead-lettered, lapsed reservations released by the tick, state restored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from budget_kit import Setup, budget_setup, running, serde
from confluent_kafka import Producer
from helpers import read_topic, unique, wait_for

from keel import events as ev
from keel.contracts import BudgetCommand, DeadLetter, RunEvent
from keel.producer import producer_config
from keel.settings import Settings
from services.budget.config import BudgetSettings
from services.budget.state import TenantBudgets
from services.budget.store import TenantStore

pytestmark = pytest.mark.integration
USD = 1_000_000


@pytest.fixture
def setup(stack: Settings) -> Iterator[Setup]:
    yield budget_setup(stack)


def command(
    tenant: str, action: str, rid: str, amount: int = 0, lapse_ms: int = 60_000, **over: Any
) -> BudgetCommand:
    run, step, attempt = rid.split("/")
    now = ev.now_ms()
    fields: dict[str, Any] = {
        "command_id": unique(f"{action}-{rid}"),
        "action": action,
        "tenant_id": tenant,
        "run_id": run,
        "workflow": "wf",
        "step": step,
        "attempt": int(attempt),
        "reservation_id": rid,
        "amount_micros": amount,
        "issued_at": ev.at_ms(now),
        "expires_at": ev.at_ms(now + lapse_ms) if action == "reserve" else None,
    }
    fields.update(over)
    return BudgetCommand(**fields)


def send(settings: Settings, setup: Setup, commands: list[BudgetCommand], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    # murmur2, as every Keel producer: a tenant's commands land on its partition, in order.
    producer = Producer(producer_config(settings))
    codec = serde(settings, setup)
    for c in commands:
        producer.produce(setup.topics.commands, key=c.tenant_id, value=codec.encode(setup.topics.commands, c))
    for blob in raw:
        producer.produce(setup.topics.commands, key=b"poison", value=blob)
    assert producer.flush(10) == 0


def answers(settings: Settings, setup: Setup, expect: int) -> list[RunEvent]:
    codec = serde(settings, setup)
    msgs = read_topic(settings, setup.topics.events, expect=expect, timeout=30)
    out = []
    for m in msgs:
        fact: RunEvent = codec.decode(setup.topics.events, m.value())
        assert m.key().decode() == fact.run_id  # keyed by the run
        out.append(fact)
    return out


def restored(settings: Settings, setup: Setup, tenant: str) -> TenantBudgets | None:
    store = TenantStore(settings, setup.topics.state, unique("restore"))
    store.load(set(range(settings.topic_partitions)))  # exactly as the enforcer restores on assignment
    return store.get(tenant)


def test_reserves_are_answered_on_the_events_topic_and_malformed_commands_are_dead_lettered(stack, setup):
    tenant = unique("tenant")
    config = BudgetSettings(budget_limits=f'{{"tenant_day_usd": {{"{tenant}": 10.0}}}}')
    with running(stack, setup, config):
        send(
            stack,
            setup,
            [
                command(tenant, "reserve", "r1/s/1", 6 * USD),
                command(tenant, "reserve", "r2/s/1", 6 * USD),  # only r1's hold is in the way
                command(tenant, "reserve", "r3/s/1", 11 * USD),  # its own worst case passes the limit
                command(tenant, "refund", "r4/s/1", USD),  # no such action
                command(tenant, "spend", "r1/s/1", 2 * USD),
                command(tenant, "close", "r1/s/1"),
            ],
            raw=[b"\x00garbage"],
        )
        facts = answers(stack, setup, 3)
        by_run = {f.run_id: f for f in facts}
        assert {r: f.event for r, f in by_run.items()} == {
            "r1": "budget_reserved",
            "r2": "budget_deferred",
            "r3": "budget_exceeded",
        }
        for f in facts:
            assert f.source == "budget" and f.tenant_id == tenant and f.budget is not None
        assert by_run["r2"].budget.retry_after_ms and by_run["r2"].budget.reserved_micros == 6 * USD  # type: ignore[union-attr]
        assert by_run["r3"].budget.requested_micros == 11 * USD  # type: ignore[union-attr]
        dead = [
            serde(stack, setup).decode(setup.dlq, m.value()) for m in read_topic(stack, setup.dlq, expect=2)
        ]
        assert len(dead) == 2 and all(isinstance(d, DeadLetter) for d in dead)
        assert any("unknown action" in d.reason for d in dead)
        wait_for(
            lambda: _spent(stack, setup, tenant) == (2 * USD, 0), what="the spend and close in the state"
        )


def test_a_reservation_never_closed_is_released_at_its_lapse(stack, setup):
    tenant = unique("tenant")
    config = BudgetSettings(budget_limits=f'{{"tenant_day_usd": {{"{tenant}": 10.0}}}}')
    with running(stack, setup, config):
        send(stack, setup, [command(tenant, "reserve", "r1/s/1", 4 * USD, lapse_ms=1500)])
        facts = answers(stack, setup, 2)
        assert [f.event for f in facts] == ["budget_reserved", "budget_released"]
        assert facts[1].budget is not None and facts[1].budget.requested_micros == 4 * USD
        wait_for(lambda: _spent(stack, setup, tenant) == (0, 0), what="the lapse in the state")


def _spent(settings: Settings, setup: Setup, tenant: str) -> tuple[int, int] | None:
    state = restored(settings, setup, tenant)
    if state is None:
        return None
    [day] = [s for k, s in state.scopes.items() if k.startswith("tenant:")]
    return day.spent, day.reserved
