"""The budget enforcer's shell without a broker: answers and state in one batch, ownership by tenant,
lapses on the tick, dead letters for malformed commands, and aborted batches leave no trace."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_budget_core import USD, cmd

from keel import events as ev
from keel.contracts import BudgetCommand, RunEvent
from keel.partitioner import partition_for
from keel.settings import Settings
from keel.txloop import Output, Record, Reject
from services.budget.config import BudgetSettings, BudgetTopics
from services.budget.service import BudgetProcessor
from services.budget.state import TenantBudgets, merge, split

TOPICS = BudgetTopics(commands="cmds", events="events", state="state")
SETTINGS = Settings(topic_partitions=3)
OWNER = partition_for("acme", 3)


def processor() -> BudgetProcessor:
    config = BudgetSettings(budget_limits='{"tenant_day_usd": {"acme": 10.0}}')
    return BudgetProcessor(SETTINGS, topics=TOPICS, config=config)


def record(c: BudgetCommand, partition: int = OWNER, offset: int = 0) -> Record:
    return Record(TOPICS.commands, partition, offset, c.tenant_id, c, 0)


def now_cmd(action: str, rid: str, amount: int = 0, lapse_ms: int = 60_000, **over: object) -> BudgetCommand:
    now = ev.now_ms()
    return (
        cmd(action, rid, amount, at=now, **over)
        if action != "reserve"
        else replace(cmd(action, rid, amount, at=now, **over), expires_at=ev.at_ms(now + lapse_ms))
    )


def facts(outputs: list[Output]) -> list[RunEvent]:
    return [o.value for o in outputs if isinstance(o.value, RunEvent)]


def test_an_answer_and_the_tenant_s_state_go_out_together_keyed_by_run_and_tenant():
    p = processor()
    out = list(p.handle(record(now_cmd("reserve", "r1/s/1", 3 * USD))))
    assert [(o.topic, o.key) for o in out] == [
        ("events", "r1"),
        ("state", '["acme"]'),
        ("state", '["acme","r1"]'),
    ]
    assert {o.partition for o in out[1:]} == {OWNER}
    p.on_commit()
    assert p.tenants.get("acme") is not None


def test_a_command_rewrites_only_the_records_it_changed_and_a_forgotten_run_is_tombstoned():
    p = processor()
    for run in ("r1", "r2", "r3"):
        p.handle(record(now_cmd("reserve", f"{run}/s/1", USD)))
    p.on_commit()
    out = list(p.handle(record(now_cmd("close", "r2/s/1"))))  # r2's hold leaves the day scopes too
    assert [o.key for o in out] == ['["acme"]', '["acme","r2"]']
    out = list(p.handle(record(now_cmd("forget", "r3/s/1", reservation_id=""))))
    assert [(o.key, o.value is None) for o in out if o.topic == "state"] == [
        ('["acme"]', False),
        ('["acme","r3"]', True),
    ]
    p.on_commit()
    state = p.tenants.get("acme")
    assert state is not None
    assert merge("acme", [TenantBudgets.from_json(v.to_json()) for v in split(state).values()]) == state


def test_an_aborted_batch_leaves_no_hold_behind():
    p = processor()
    p.handle(record(now_cmd("reserve", "r1/s/1", 7 * USD)))
    p.on_abort()
    assert p.tenants.get("acme") is None and p.due == {}
    [answer] = facts(list(p.handle(record(now_cmd("reserve", "r2/s/1", 7 * USD)))))
    assert answer.event == "budget_reserved"  # the aborted hold is not in the way


def test_a_command_on_another_partition_is_rerouted_to_the_tenant_s_never_decided_there():
    p = processor()
    other = (OWNER + 1) % 3
    [out] = p.handle(record(now_cmd("reserve", "r1/s/1", USD), partition=other, offset=7))
    assert (out.topic, out.key, out.partition) == ("cmds", "acme", OWNER)
    assert out.headers == [("keel-rerouted-from", f"cmds:{other}:7".encode())]
    assert p.tenants.get("acme") is None


def test_malformed_commands_are_rejected_with_the_reason():
    p = processor()
    with pytest.raises(Reject, match="unknown action"):
        p.handle(record(replace(now_cmd("reserve", "r1/s/1", USD), action="refund")))
    with pytest.raises(Reject, match="negative"):
        p.handle(record(now_cmd("spend", "r1/s/1", -1)))


def test_the_tick_releases_a_lapsed_reservation_and_a_due_lapse_never_defers_a_reserve():
    p = processor()
    p.handle(record(now_cmd("reserve", "r1/s/1", 8 * USD, lapse_ms=-1)))  # lapsed already
    p.on_commit()
    out = list(p.tick(ev.now_ms()))
    assert [f.event for f in facts(out)] == ["budget_released"] and out[-1].topic == "state"
    p.on_abort()  # the tick's turn aborted: the lapse is due again
    assert p.due
    # A reserve for the tenant releases the due lapse first, in the same batch, and is granted.
    out = list(p.handle(record(now_cmd("reserve", "r2/s/1", 8 * USD))))
    assert [f.event for f in facts(out)] == ["budget_released", "budget_reserved"]
    p.on_commit()
    assert p.tick(ev.now_ms()) == []
