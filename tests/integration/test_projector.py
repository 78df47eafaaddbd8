"""The projector against the real broker and database: tables, shadow rebuilds, swaps, and SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from helpers import make_topics, unique, wait_for
from unit.agent_stories import AGENT, ANSWER, FAILED_TURN_COST, STEP, TURN_COST, looping, support_triage
from unit.test_projection_core import completed_after_retry, failed, fan_out

from keel import db
from keel.contracts import RunEvent
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from services.projector.rebuild import build_into, end_offsets, rebuild
from services.projector.schema import differences, drop_schema, swap_schema
from services.projector.service import Projector

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    settings: Settings
    topic: str
    schema: str
    group: str
    serde: Serde
    conn: psycopg.Connection[Any]

    def produce(
        self, events: list[RunEvent], raw: tuple[bytes, ...] = (), partition: int | None = None
    ) -> None:
        producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap, "enable.idempotence": True})
        where = {} if partition is None else {"partition": partition}
        for e in events:
            producer.produce(self.topic, key=e.run_id, value=self.serde.encode(self.topic, e), **where)
        for blob in raw:
            producer.produce(self.topic, key=b"poison", value=blob)
        assert producer.flush(10) == 0

    def stored(self, schema: str | None = None) -> dict[tuple[str, int], int]:
        rows = self.conn.execute(
            f'SELECT topic, "partition", next_offset FROM "{schema or self.schema}".projector_offsets'
        )
        return {(t, p): o for t, p, o in rows}

    def caught_up(self, schema: str | None = None) -> bool:
        ends = {tp: end for tp, end in end_offsets(self.settings, [self.topic]).items() if end > 0}
        return all(self.stored(schema).get(tp) == end for tp, end in ends.items())

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(query.replace("S.", f'"{self.schema}".')).fetchall()

    def shadow_differences(self) -> dict[str, int]:
        shadow = f"{self.schema}_shadow"
        build_into(
            self.settings, [self.topic], shadow, end_offsets(self.settings, [self.topic]), replace=True
        )
        # No transactional producer writes here, so no commit markers: the offsets must be equal too.
        assert self.stored() == self.stored(shadow)
        return differences(self.conn, self.schema, shadow)


@pytest.fixture
def setup(stack: Settings) -> Iterator[Setup]:
    topic, schema = unique("test.run-events"), f"proj_{uuid.uuid4().hex[:10]}"
    make_topics(stack, topic, partitions=3)
    client = registry_client(stack.schema_registry_url)
    register_contracts(client, {topic: "run_event"})
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        yield Setup(stack, topic, schema, unique("projector"), Serde(client, {topic: "run_event"}), conn)
        for suffix in ("", "_shadow", "_rebuild", "_old"):
            drop_schema(conn, schema + suffix)


class Running:
    """A projector in a thread, stopped (SIGTERM-style) on exit."""

    def __init__(self, s: Setup) -> None:
        self.projector = Projector(s.settings, topics=[s.topic], schema=s.schema, group_id=s.group)
        self.thread = threading.Thread(target=self.projector.run, daemon=True)

    def __enter__(self) -> Projector:
        self.thread.start()
        return self.projector

    def __exit__(self, *_: object) -> None:
        self.projector.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_projects_runs_steps_attempts_costs_and_events_and_a_shadow_build_equals_it(setup):
    a, b, c = completed_after_retry(unique("run")), failed(unique("run")), fan_out(unique("run"))
    duplicate = a.events[9]  # an at-least-once copy: same event id, another offset
    setup.produce(
        a.events + b.events + c.events + [duplicate], raw=(b"not avro at all", b"\x00\x00\x00\x00\x07x")
    )
    with Running(setup):
        wait_for(setup.caught_up, timeout=60, what="the projector to reach the end of the topic")

    runs = dict(setup.rows("SELECT run_id, status FROM S.runs"))
    assert runs == {a.run_id: "completed", b.run_id: "failed", c.run_id: "completed"}
    [(tenant, cost, error)] = setup.rows(
        f"SELECT tenant_id, cost_usd, error FROM S.runs WHERE run_id = '{b.run_id}'"
    )
    assert (tenant, cost, error) == ("globex", Decimal("0.001"), b.events[-1].error)
    attempts = setup.rows(
        f"SELECT attempt, status, failure_class FROM S.attempts WHERE run_id = '{a.run_id}' "
        "AND step = 'send_email' "
        "ORDER BY attempt"
    )
    assert attempts == [(1, "failed", "transient"), (2, "committed", None)]
    steps = setup.rows(
        f"SELECT step, status, attempts, external_id FROM S.steps WHERE run_id = '{a.run_id}' ORDER BY step"
    )
    assert steps == [
        ("draft_email", "committed", 1, None),
        ("log_to_crm", "committed", 1, "crm-1"),
        ("send_email", "committed", 2, "msg-1"),
    ]
    [(fan_cost,)] = setup.rows(f"SELECT sum(cost_usd) FROM S.costs WHERE run_id = '{c.run_id}'")
    assert (
        fan_cost
        == Decimal("0.0070")
        == setup.rows(f"SELECT cost_usd FROM S.runs WHERE run_id = '{c.run_id}'")[0][0]
    )
    for story in (a, b, c):
        timeline = setup.rows(
            f"SELECT event_id FROM S.events WHERE run_id = '{story.run_id}' ORDER BY \"offset\""
        )
        assert [r[0] for r in timeline] == [e.event_id for e in story.events]  # log order, duplicate once
    errors = setup.rows('SELECT error_class, reason FROM S.projection_errors ORDER BY "offset"')
    assert [e[0] for e in errors] == ["undecodable", "undecodable"]

    assert setup.shadow_differences() == {}


def test_a_swap_under_a_running_projector_is_followed_and_rebuild_equals_the_live_tables(setup):
    first, second, third = (completed_after_retry(unique("run")) for _ in range(3))
    setup.produce(first.events, partition=0)
    with Running(setup):
        wait_for(setup.caught_up, timeout=60, what="the first run")
        # A rebuild built up to here, swapped in only after the projector has moved on: its offsets are
        # behind the projector's, which must notice, seek back and re-project into the new tables.
        behind = end_offsets(setup.settings, [setup.topic])
        build_into(setup.settings, [setup.topic], f"{setup.schema}_rebuild", behind)
        setup.produce(second.events, partition=1)  # after the swap, no message arrives here again
        wait_for(setup.caught_up, timeout=60, what="the second run")
        swap_schema(setup.conn, f"{setup.schema}_rebuild", setup.schema)
        assert setup.rows("SELECT count(*) FROM S.runs") == [(1,)]
        setup.produce(third.events, partition=2)
        wait_for(
            lambda: setup.caught_up() and setup.rows("SELECT count(*) FROM S.runs") == [(3,)],
            timeout=60,
            what="the projector to follow the swap",
        )
        assert setup.rows("SELECT count(*) FROM S.events") == [(3 * len(first.events),)]
        assert setup.shadow_differences() == {}

        rebuild(setup.settings, [setup.topic], setup.schema)  # the real thing, under the running projector
        assert setup.shadow_differences() == {}
        fourth = failed(unique("run"))
        setup.produce(fourth.events)
        wait_for(
            lambda: setup.caught_up() and setup.rows("SELECT count(*) FROM S.runs") == [(4,)],
            timeout=60,
            what="the projector to go on after the rebuild",
        )
    assert setup.shadow_differences() == {}


def test_dropped_projections_are_built_again_from_the_topic(setup):
    first, second = completed_after_retry(unique("run")), failed(unique("run"))
    setup.produce(first.events, partition=0)
    with Running(setup):
        wait_for(setup.caught_up, timeout=60, what="the first run")
        drop_schema(setup.conn, setup.schema)  # projections are disposable
        setup.produce(second.events, partition=1)

        def built_again() -> bool:
            try:
                return setup.rows("SELECT count(*) FROM S.runs") == [(2,)] and setup.caught_up()
            except psycopg.errors.UndefinedTable:
                return False

        wait_for(built_again, timeout=60, what="the projector to build the tables again")
    assert setup.shadow_differences() == {}


def start_projector(s: Setup) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "KEEL_BATCH_MAX_MESSAGES": "7"}
    argv = [
        sys.executable,
        "-m",
        "services.projector",
        "--schema",
        s.schema,
        "--topic",
        s.topic,
        "--group",
        s.group,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "STARTED"
    return proc


def test_a_projector_killed_mid_stream_and_restarted_ends_with_exactly_the_same_tables(setup):
    stories = [(completed_after_retry, failed, fan_out)[i % 3](unique("run")) for i in range(150)]
    events = [e for s in stories for e in s.events]
    setup.produce(events + events[::50])  # with some at-least-once duplicates
    total = sum(end_offsets(setup.settings, [setup.topic]).values())

    worker = start_projector(setup)
    try:
        wait_for(lambda: sum(setup.stored().values()) > 200, timeout=60, what="the projector to be under way")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    assert 0 < sum(setup.stored().values()) < total, "the kill was meant to land mid-stream"

    restarted = start_projector(setup)
    try:
        wait_for(setup.caught_up, timeout=120, what="the restarted projector to reach the end")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0
    assert setup.rows("SELECT count(*), count(DISTINCT event_id) FROM S.events") == [
        (len(events), len(events))
    ]
    expected_cost = sum(Decimal(repr(e.cost_usd_est)) for e in events if e.cost_usd_est is not None)
    assert setup.rows("SELECT sum(cost_usd) FROM S.costs") == [(expected_cost,)]
    assert setup.rows("SELECT sum(cost_usd) FROM S.runs") == [(expected_cost,)]
    assert setup.shadow_differences() == {}


def test_an_agent_run_keeps_its_sub_steps_apart_and_a_shadow_build_equals_it(setup):
    agent, loop = support_triage(unique("run")), looping(unique("run"))
    plain = completed_after_retry(unique("run"))
    setup.produce(agent.events + loop.events + plain.events)
    with Running(setup):
        wait_for(setup.caught_up, timeout=60, what="the projector to reach the end of the topic")

    run = agent.run_id
    attempts = setup.rows(
        f"SELECT call, attempt, status, failure_class FROM S.attempts WHERE run_id = '{run}' "
        "ORDER BY call, attempt"
    )
    assert attempts == [
        ("turn-1", 1, "committed", None),
        ("turn-1.call-0", 1, "committed", None),
        ("turn-2", 1, "failed", "transient"),
        ("turn-2", 2, "committed", None),
        ("turn-2.call-0", 1, "failed", "unknown_outcome"),
        ("turn-2.call-0", 2, "committed", None),
        ("turn-3", 1, "committed", None),
        ("turn-3.call-0", 1, "committed", None),
        ("turn-3.call-1", 1, "committed", None),
        ("turn-4", 1, "committed", None),
    ]
    [step] = setup.rows(
        "SELECT step, kind, status, agent_id, turns, idempotency_key, output_json, cost_usd "
        f"FROM S.steps WHERE run_id = '{run}'"
    )
    spent = sum(Decimal(repr(c)) for c in TURN_COST.values()) + Decimal(repr(FAILED_TURN_COST))
    assert step == (STEP, "agent", "committed", AGENT, 4, None, ANSWER, spent)
    assert setup.rows(f"SELECT status, turns FROM S.steps WHERE run_id = '{loop.run_id}'") == [("failed", 2)]
    costs = setup.rows(f"SELECT call, agent_id, cost_usd FROM S.costs WHERE run_id = '{run}' ORDER BY ts")
    assert costs == [
        ("turn-1", AGENT, Decimal(repr(TURN_COST[1]))),
        ("turn-2", AGENT, Decimal(repr(FAILED_TURN_COST))),
        ("turn-2", AGENT, Decimal(repr(TURN_COST[2]))),
        ("turn-3", AGENT, Decimal(repr(TURN_COST[3]))),
        ("turn-4", AGENT, Decimal(repr(TURN_COST[4]))),
    ]
    events = setup.rows(f"SELECT event_id, call FROM S.events WHERE run_id = '{run}' ORDER BY \"offset\"")
    assert events == [(e.event_id, e.call) for e in agent.events]
    plain_attempts = setup.rows(f"SELECT DISTINCT call FROM S.attempts WHERE run_id = '{plain.run_id}'")
    assert plain_attempts == [("",)]

    assert setup.shadow_differences() == {}
