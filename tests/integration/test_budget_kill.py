"""kill -9 of the budget enforcer mid-load: no reservation lost or double-counted, the limit holds.

The test is a small scheduler for one tenant: it keeps several units asking for reservations against a
tenant-day limit, spends part of each grant and closes it, asks again after a deferral, and gives a
unit up when it is refused. The enforcer runs as a child process and is SIGKILLed in the middle of the
load, then restarted under its instance id. Afterwards:

- every reserve got exactly one answer (none lost, none doubled), and no reservation was granted twice;
- replaying what the tenant sent, in the order it sent it, with the enforcer's answers: spent plus the
  holds of the grants not yet closed never passed the limit at any grant;
- the state restored from the changelog holds exactly the sum of the spends and no hold.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from budget_kit import Setup, budget_setup, serde
from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import unique, wait_for
from test_budget_enforcer import USD, command, restored

from keel.contracts import BudgetCommand, RunEvent
from keel.producer import producer_config
from keel.settings import Settings

pytestmark = pytest.mark.integration
KIT = Path(__file__).with_name("budget_kit.py")
LIMIT = 12 * USD
UNITS, IN_FLIGHT = 90, 8


def start(settings: Settings, setup: Setup, tenant: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(KIT), *setup.argv()],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "KEEL_BUDGET_LIMITS": f'{{"tenant_day_usd": {{"{tenant}": {LIMIT / USD}}}}}',
            "KEEL_POLL_TIMEOUT_S": "0.05",
        },
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "STARTED"
    return proc


class Tenant:
    """One tenant's scheduler: units waiting for an answer, in flight, or done."""

    def __init__(self, settings: Settings, setup: Setup, tenant: str) -> None:
        self.setup, self.tenant = setup, tenant
        self.codec = serde(settings, setup)
        self.producer = Producer(producer_config(settings))  # murmur2: the tenant's partition, in order
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": unique("budget-client"),
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([setup.topics.events])
        self.rng = random.Random(7)
        self.sent: list[BudgetCommand] = []  # every command, in the order sent
        self.pending: dict[str, BudgetCommand] = {}  # rid -> the reserve waiting for its answer
        self.retry_at: dict[str, tuple[float, BudgetCommand]] = {}  # rid -> when to ask again, and what
        self.outcome: dict[str, str] = {}  # reserve command id -> the answer's kind
        self.answers: list[RunEvent] = []
        self.started = 0
        self.grants = 0

    def send(self, c: BudgetCommand) -> None:
        self.sent.append(c)
        self.producer.produce(
            self.setup.topics.commands,
            key=c.tenant_id,
            value=self.codec.encode(self.setup.topics.commands, c),
        )
        self.producer.poll(0)

    def reserve(self, rid: str, amount: int) -> None:
        c = command(self.tenant, "reserve", rid, amount, lapse_ms=600_000)
        self.pending[rid] = c
        self.send(c)

    def feed(self) -> None:
        """Keep IN_FLIGHT units asking; ask again after deferrals."""
        now = time.monotonic()
        for rid, (at, old) in list(self.retry_at.items()):
            if at <= now:
                del self.retry_at[rid]
                self.reserve(rid, old.amount_micros)
        while self.started < UNITS and len(self.pending) + len(self.retry_at) < IN_FLIGHT:
            self.started += 1
            self.reserve(f"run{self.started}/s/1", self.rng.randint(2, 30) * USD // 10)

    def read(self, timeout: float) -> None:
        msg = self.consumer.poll(timeout)
        if msg is None or msg.error():
            return
        fact: RunEvent = self.codec.decode(self.setup.topics.events, msg.value())
        self.answers.append(fact)
        if fact.event == "budget_warning" or fact.budget is None:
            return
        rid = fact.budget.reservation_id or ""
        c = self.pending.pop(rid, None)
        assert c is not None, f"an answer for no reserve waiting: {fact.event_id}"
        self.outcome[c.command_id] = fact.event
        if fact.event == "budget_reserved":
            self.grants += 1
            # The call costs at most its worst case; then the attempt is over.
            self.send(command(self.tenant, "spend", rid, self.rng.randint(0, c.amount_micros)))
            self.send(command(self.tenant, "close", rid))
        elif fact.event == "budget_deferred":
            self.retry_at[rid] = (time.monotonic() + 0.05, c)

    def done(self) -> bool:
        return self.started == UNITS and not self.pending and not self.retry_at


@pytest.mark.parametrize(
    ("kill_after", "successor"),
    [
        (2, "same"),
        (12, "same"),
        (40, "same"),
        # Another instance takes over: it waits for the group to drop the dead member and for the
        # broker to abort the dead one's open transaction before it restores.
        (12, "other"),
    ],
)  # kill_after: answers seen before the kill
def test_kill_9_mid_load_loses_no_reservation_counts_none_twice_and_the_limit_holds(
    stack: Settings, kill_after: int, successor: str
) -> None:
    setup = budget_setup(stack)
    tenant = unique("tenant")
    client = Tenant(stack, setup, tenant)
    enforcer = start(stack, setup, tenant)
    restarted = None
    try:
        deadline = time.monotonic() + 120
        while len(client.outcome) < kill_after:
            assert time.monotonic() < deadline, "no progress before the kill"
            client.feed()
            client.read(0.05)
        client.feed()
        client.producer.flush(10)
        assert client.pending, "the kill must land with reserves waiting"
        enforcer.send_signal(signal.SIGKILL)  # mid-load: commands in flight, a batch possibly open
        enforcer.wait(10)
        for _ in range(20):  # the tenant keeps sending while the enforcer is down
            client.read(0.01)
            client.feed()
        restarted = start(
            stack, setup if successor == "same" else replace(setup, txid=unique("other")), tenant
        )
        while not client.done():
            assert time.monotonic() < deadline, f"stuck: {len(client.pending)} waiting for an answer"
            client.feed()
            client.read(0.05)
        client.producer.flush(10)
        wait_for(lambda: _consumed(stack, setup), timeout=30, what="the enforcer to take every command")
    finally:
        for proc in (enforcer, restarted):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        client.consumer.close()

    reserves = [c for c in client.sent if c.action == "reserve"]
    # Every reserve answered exactly once (the client asserts no answer comes for nothing waiting).
    assert sorted(client.outcome) == sorted(c.command_id for c in reserves)
    decisions = [a for a in client.answers if a.event != "budget_warning"]
    assert len({a.event_id for a in decisions}) == len(decisions) == len(reserves)
    granted = [a.budget.reservation_id for a in decisions if a.event == "budget_reserved"]  # type: ignore[union-attr]
    assert len(granted) == len(set(granted)) == client.grants, "a reservation granted twice"
    outcomes = {client.outcome[c.command_id] for c in reserves}
    assert {"budget_reserved", "budget_deferred", "budget_exceeded"} <= outcomes, outcomes

    # Replay in the tenant's order with the enforcer's answers: the limit held at every grant.
    spent, holds, worst = 0, {}, 0
    for c in client.sent:
        if c.action == "reserve" and client.outcome[c.command_id] == "budget_reserved":
            holds[c.reservation_id] = c.amount_micros
            worst = max(worst, spent + sum(holds.values()))
            assert spent + sum(holds.values()) <= LIMIT, f"granted {c.reservation_id} past the limit"
        elif c.action == "spend":
            spent += c.amount_micros
            holds[c.reservation_id] -= min(c.amount_micros, holds[c.reservation_id])
        elif c.action == "close":
            holds.pop(c.reservation_id)
    assert worst > LIMIT * 3 // 4  # the load really pressed against the limit

    # The restored state: exactly the spends, no hold left behind.
    state = restored(stack, setup, tenant)
    assert state is not None
    [day] = [s for k, s in state.scopes.items() if k.startswith("tenant:")]
    assert (day.spent, day.reserved) == (spent, 0)
    assert day.spent <= LIMIT


def _consumed(settings: Settings, setup: Setup) -> bool:
    """Whether the enforcer's group has committed every command on the topic (the state goes with it)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": setup.group,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        parts = [TopicPartition(setup.topics.commands, p) for p in range(settings.topic_partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(setup.topics.commands, p), timeout=10)[1]
            for p in committed
        }
        return all(ends[p] == 0 or committed[p] >= ends[p] for p in committed)
    finally:
        consumer.close()
